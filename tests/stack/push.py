"""The push path of AWS on the local stack: an API Gateway call reaches the starter through CloudTrail, EventBridge, SQS
and a Lambda event source mapping, and the executions it starts are run.

Test support, not product code. On AWS:

    API Gateway call -> CloudTrail (only with a trail logging management write events in the account-region)
      -> EventBridge, default bus ("AWS API Call via CloudTrail", a while later: AWS publishes no latency)
        -> rule `agent-push` -> SQS queue `agent-push` (redrive to `agent-push-dead-letters` after 5 receives)
          -> Lambda event source mapping (batches of up to 100 messages or the batching window, ReportBatchItemFailures)
            -> the starter (`targets`, an SQS batch) -> StartExecution `push-<hex>` -> Step Functions runs it

Here the fake CloudTrail decides whether a call reaches EventBridge (a trail that logs it, fake_cloudtrail.py) and
hands it to `EventBridgeDelivery`, which puts it on moto's default bus of the account-region after a delay drawn per
event (`EmbeddedStack.push_delay`). moto's EventBridge matches the rule and sends the event to the queue itself
(moto_indexed.py makes the message body the whole event, `account` included, as AWS sends it), and moto's SQS moves a
message to the dead-letter queue when it is received once more after `maxReceiveCount` receives. `PushPipeline`
creates that queue, its dead-letter queue and the rule in the deployment's account-region, and emulates the event
source mapping, which moto does not run: it long-polls the queue, invokes the function through the stack's
LambdaAdapter with the standard SQS event, deletes what the answer does not report as failed, and runs the executions
the starter started with the stack's interpreter (`EmbeddedStack.run(..., execution_arn=...)`), as `tick()` does.

Deliberate differences from AWS: one poller by default (`pollers`; AWS starts with five, so there a burst can be split
into several smaller batches), no back-off after failed invocations, and the visibility timeout may be shorter than
the function's timeout (tests want failed messages back in seconds), which AWS refuses unless `function_timeout` is
given: a batch held longer than the visibility timeout is then noted in `errors()`, since its messages may have been
received twice, which AWS rules out.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import heapq
import itertools
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from lambda_adapter import MAX_REQUEST_BYTES

QUEUE_NAME = "agent-push"
DEAD_LETTER_QUEUE_NAME = "agent-push-dead-letters"
RULE_NAME = "agent-push"
MAX_RECEIVE_COUNT = 5
SOURCE = "aws.apigateway"
DETAIL_TYPE = "AWS API Call via CloudTrail"
EVENT_PATTERN = {"source": [SOURCE], "detail-type": [DETAIL_TYPE],
                 "detail": {"eventSource": ["apigateway.amazonaws.com"]}}
# The executions the starter starts.
EXECUTION_PREFIX = "push-"
# SQS keeps a dead letter 14 days at most; the dead-letter queue keeps them that long.
DEAD_LETTER_RETENTION_SECONDS = 14 * 86400
# Lambda's event source mapping quotas for SQS: a batch of at most 10,000 messages, over 10 only with a batching window
# of a whole second at least, at most 300 s.
MAX_BATCH_SIZE = 10_000
MAX_BATCH_WINDOW_SECONDS = 300
MAX_VISIBILITY_TIMEOUT_SECONDS = 43_200
# How long the mapping waits for the function's answer: longer than any function's timeout, which the adapter enforces.
INVOKE_TIMEOUT_SECONDS = 960

Clients = Callable[[str, str, str], Any]  # (service, account, region) -> a boto3 client of moto acting there


class MotoClients:
    """boto3 clients of moto by (service, account, region), made once each by `make` (stack.boto with the account's
    credentials): the delivery and mapping threads share them (a client is safe to share, not to create concurrently).
    `forget()` after moto's reset, which forgets the credentials it issued: a client keeping them would act in the
    default account."""

    def __init__(self, make: Clients):
        self._make = make
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str, str], Any] = {}

    def __call__(self, service: str, account: str, region: str):
        with self._lock:
            key = (service, account, region)
            if key not in self._clients:
                self._clients[key] = self._make(service, account, region)
            return self._clients[key]

    def forget(self) -> None:
        with self._lock:
            self._clients.clear()


# --- CloudTrail -> EventBridge ----------------------------------------------------------------------------------------

@dataclass
class Delivery:
    """One CloudTrail event on its way to EventBridge: when CloudTrail logged it, when it is due, when it was put on
    the bus (None while pending) and the EventBridge event's id, or why it was not."""

    event_id: str  # the CloudTrail record's eventID
    event_name: str
    account: str
    region: str
    logged: float  # epoch seconds
    due: float
    delivered: float | None = None
    eventbridge_id: str | None = None
    error: str | None = None


class EventBridgeDelivery:
    """CloudTrail's hand-over to EventBridge: the fake CloudTrail's `on_event(account, region, record)` hook. Each event
    is put on the default bus of its account-region (`put_events`, Source "aws.apigateway", DetailType "AWS API Call
    via CloudTrail", Detail the record, Time its eventTime) after a delay drawn uniformly from `delay()` ((min, max)
    seconds, read for each event so that a stack's setting can change between events). One scheduler thread delivers
    them in the order they fall due; `reset()` and `stop()` drop the pending ones."""

    def __init__(self, clients: Clients, delay: Callable[[], tuple[float, float]], seed: int | None = None):
        self._clients = clients
        self._delay = delay
        self._random = random.Random(seed)
        self._sequence = itertools.count()
        self._lock = threading.Condition()
        self._delivering = threading.Lock()  # held while an event is put: reset() waits for it
        self._pending: list[tuple[float, int, Delivery, dict]] = []
        self._log: list[Delivery] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="cloudtrail-to-eventbridge", daemon=True)
        self._thread.start()

    def __call__(self, account: str, region: str, record: dict) -> None:
        low, high = self._delay()
        if not 0 <= low <= high:
            raise ValueError(f"push delay must be a range (min, max) with 0 <= min <= max, not {(low, high)!r}")
        now = time.time()
        with self._lock:
            delivery = Delivery(record["eventID"], record["eventName"], account, region, now,
                                now + self._random.uniform(low, high))
            self._log.append(delivery)
            heapq.heappush(self._pending, (delivery.due, next(self._sequence), delivery, copy.deepcopy(record)))
            self._lock.notify()

    def deliveries(self) -> list[Delivery]:
        """Every event handed over since the last reset, pending ones included, in the order CloudTrail logged them."""
        with self._lock:
            return [dataclasses.replace(d) for d in self._log]

    def pending(self) -> int:
        with self._lock:
            return sum(1 for d in self._log if d.delivered is None and d.error is None)

    def wait_delivered(self, timeout: float) -> None:
        """Until no event is pending (TimeoutError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.pending()} events still pending after {timeout} s")
            time.sleep(0.05)

    def reset(self) -> None:
        """Drops the pending events and forgets the log; an event being put is waited for."""
        with self._lock:
            self._pending.clear()
            self._log = []
        with self._delivering:
            pass

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._pending.clear()
            self._lock.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (not self._pending or self._pending[0][0] > time.time()):
                    self._lock.wait(timeout=self._pending[0][0] - time.time() if self._pending else None)
                if self._stopping:
                    return
                _, _, delivery, record = heapq.heappop(self._pending)
                # Taken before the lock is let go, so that a reset() from now on waits for this event.
                self._delivering.acquire()
            try:
                self._put(delivery, record)
            finally:
                self._delivering.release()

    def _put(self, delivery: Delivery, record: dict) -> None:
        event_time = datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        entry = {"Time": event_time, "Source": SOURCE, "DetailType": DETAIL_TYPE, "Detail": json.dumps(record),
                 "Resources": [], "EventBusName": "default"}
        eventbridge_id, error = None, None
        try:
            answer = self._clients("events", delivery.account, delivery.region).put_events(Entries=[entry])
            [result] = answer["Entries"]
            eventbridge_id = result.get("EventId")
            if not eventbridge_id:
                error = f"{result.get('ErrorCode')}: {result.get('ErrorMessage')}"
        except Exception as exc:  # noqa: BLE001 - a delivery that failed is logged, not raised in a daemon thread
            error = repr(exc)
        with self._lock:
            delivery.delivered = time.time() if error is None else None
            delivery.eventbridge_id, delivery.error = eventbridge_id, error


# --- SQS -> Lambda -> Step Functions ----------------------------------------------------------------------------------

def sqs_record(message: dict, queue_arn: str, region: str) -> dict:
    """A received SQS message (boto3's ReceiveMessage item) as the event source mapping hands it to the function."""
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": {name: _message_attribute(value)
                              for name, value in (message.get("MessageAttributes") or {}).items()},
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update({"md5OfBody": message["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": queue_arn,
                   "awsRegion": region})
    return record


def _message_attribute(value: dict) -> dict:
    def encoded(data: bytes) -> str:
        return base64.b64encode(data).decode()

    attribute = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = encoded(value["BinaryValue"])
    attribute.update({"stringListValues": list(value.get("StringListValues") or []),
                      "binaryListValues": [encoded(v) for v in value.get("BinaryListValues") or []],
                      "dataType": value["DataType"]})
    return attribute


def failed_items(answer: Any, message_ids: list[str]) -> list[str] | None:
    """The messages a function's answer reports as failed (ReportBatchItemFailures), or None when the answer fails the
    whole batch. As Lambda reads it: no answer, no `batchItemFailures` or an empty one is a complete success; an answer
    that is not a JSON object, or an item whose `itemIdentifier` is missing (a bad key name), null, empty or not a
    message of the batch, is a complete failure."""
    if answer is None:
        return []
    if not isinstance(answer, dict):
        return None
    failures = answer.get("batchItemFailures")
    if failures is None:
        return []
    if not isinstance(failures, list):
        return None
    failed = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in message_ids:
            return None
        if identifier not in failed:
            failed.append(identifier)
    return failed


@dataclass
class Batch:
    """One invocation of the function by the event source mapping."""

    invoked: float  # epoch seconds
    answered: float
    message_ids: list[str]
    receive_counts: list[int]  # each message's ApproximateReceiveCount
    answer: Any
    function_error: str | None  # X-Amz-Function-Error, or why the invocation itself failed
    failures: list[str]  # the messages kept (to be received again): all of them when the batch failed
    executions: list[str] = field(default_factory=list)  # the ARNs of the push executions found after it

    @property
    def count(self) -> int:
        return len(self.message_ids)


@dataclass
class Execution:
    """A push execution the starter started and the pipeline ran."""

    arn: str
    name: str
    input: dict
    fan_out: bool
    started: float  # epoch seconds, when the pipeline started running it
    ended: float | None = None
    status: str | None = None  # the run's (SUCCEEDED, FAILED...), ERROR when the run itself raised
    error: str | None = None
    report: Any = None  # what `run_execution` returned (the stack's ExecutionReport)


class PushPipeline:
    """The queue, its dead-letter queue and the rule in the deployment's account-region (`setup`), and the emulated
    event source mapping (`start`).

    `clients(service, account, region)` makes moto clients; `lambda_url` is where the Lambda Invoke API answers (the
    stack's LambdaAdapter); `run_execution(input, execution_arn, fan_out)` runs an execution started in moto (the
    stack's `run`), None to leave them; `machines` maps the names of the state machines whose push executions are run
    to whether each is the fan-out. `function_timeout` is the function's timeout, when known: AWS refuses a mapping on
    a queue whose visibility timeout is shorter."""

    def __init__(self, clients: Clients, lambda_url: str, run_execution: Callable[[dict, str, bool], Any] | None,
                 machines: dict[str, bool], function: str = "targets", visibility_timeout: int = 30,
                 batch_window: float = 5, batch_size: int = 100, pollers: int = 1,
                 function_timeout: float | None = None):
        if not (isinstance(visibility_timeout, int) and 0 <= visibility_timeout <= MAX_VISIBILITY_TIMEOUT_SECONDS):
            raise ValueError(f"InvalidAttributeValue: VisibilityTimeout must be a whole number of seconds from 0 to "
                             f"{MAX_VISIBILITY_TIMEOUT_SECONDS}, not {visibility_timeout!r}")
        if not (float(batch_window).is_integer() and 0 <= batch_window <= MAX_BATCH_WINDOW_SECONDS):
            raise ValueError(f"InvalidParameterValueException: MaximumBatchingWindowInSeconds must be a whole number "
                             f"of seconds from 0 to {MAX_BATCH_WINDOW_SECONDS}, not {batch_window!r}")
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"InvalidParameterValueException: BatchSize must be from 1 to {MAX_BATCH_SIZE}")
        if batch_size > 10 and batch_window < 1:
            raise ValueError("InvalidParameterValueException: Maximum batch window in seconds must be greater than 0 "
                             "if maximum batch size is greater than 10")
        if pollers < 1:
            raise ValueError("a mapping polls with one poller at least")
        if function_timeout is not None and visibility_timeout < function_timeout:
            raise ValueError(f"InvalidParameterValueException: Queue visibility timeout: {visibility_timeout} seconds "
                             f"is less than Function timeout: {function_timeout:g} seconds")
        self._clients = clients
        self._lambda_url = lambda_url.rstrip("/")
        self._run_execution = run_execution
        self._machines = dict(machines)
        self.function = function
        self.visibility_timeout = visibility_timeout
        self.batch_window = float(batch_window)
        self.batch_size = batch_size
        self.account: str | None = None
        self.region: str | None = None
        self.queue_url = self.queue_arn = self.dead_letter_url = self.dead_letter_arn = ""
        self._lock = threading.Lock()  # guards the records below
        self._batches: list[Batch] = []
        self._executions: list[Execution] = []
        self._seen: set[str] = set()  # executions found already
        self._errors: list[str] = []
        self._workers: list[threading.Thread] = []
        self._discovering = threading.Lock()
        self._stopping = threading.Event()
        self._active = threading.Event()  # cleared while paused
        self._cycles = [threading.Lock() for _ in range(pollers)]  # held by each poller while it collects and invokes
        self._pollers: list[threading.Thread] = []

    # --- the resources ------------------------------------------------------------------------------------------------

    def setup(self, account: str, region: str) -> "PushPipeline":
        """Creates (or finds) the queue, its dead-letter queue and the rule with the queue as its target on the default
        bus of `account` in `region`."""
        self.account, self.region = account, region
        sqs = self._clients("sqs", account, region)
        self.dead_letter_url = self._queue(DEAD_LETTER_QUEUE_NAME,
                                           {"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_SECONDS)})
        self.dead_letter_arn = sqs.get_queue_attributes(QueueUrl=self.dead_letter_url,
                                                        AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_arn = f"arn:aws:sqs:{region}:{account}:{QUEUE_NAME}"
        rule_arn = f"arn:aws:events:{region}:{account}:rule/{RULE_NAME}"
        # What the deployment must grant: EventBridge may send the rule's events to the queue (moto does not check).
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage",
            "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}}]}
        self.queue_url = self._queue(QUEUE_NAME, {
            "VisibilityTimeout": str(self.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": self.dead_letter_arn,
                                         "maxReceiveCount": MAX_RECEIVE_COUNT}),
            "Policy": json.dumps(policy)})
        self.queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url,
                                                  AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events = self._clients("events", account, region)
        events.put_rule(Name=RULE_NAME, EventPattern=json.dumps(EVENT_PATTERN), State="ENABLED",
                        EventBusName="default")
        events.put_targets(Rule=RULE_NAME, EventBusName="default", Targets=[{"Id": QUEUE_NAME, "Arn": self.queue_arn}])
        return self

    def _queue(self, name: str, attributes: dict[str, str]) -> str:
        sqs = self._clients("sqs", self.account, self.region)
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist:
            return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        return url

    # --- lifecycle ----------------------------------------------------------------------------------------------------

    def start(self) -> "PushPipeline":
        if not self.queue_url:
            raise RuntimeError("setup(account, region) first")
        self._active.set()
        for number, cycle in enumerate(self._cycles):
            poller = threading.Thread(target=self._poll, args=(cycle,), name=f"push-poller-{number}", daemon=True)
            poller.start()
            self._pollers.append(poller)
        return self

    def stop(self) -> None:
        """Ends the mapping after the batch in hand (its invocation is waited for, not the executions it started)."""
        self._stopping.set()
        self._active.set()
        for poller in self._pollers:
            poller.join(timeout=INVOKE_TIMEOUT_SECONDS)
        self._pollers = []

    def pause(self, timeout: float = 900) -> None:
        """Stops polling once the batches in hand are invoked, and waits (up to `timeout` seconds) for the executions
        running: before moto's state is reset under the pipeline."""
        self._active.clear()
        for cycle in self._cycles:
            with cycle:
                pass
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))

    def reset(self) -> None:
        """Forgets the records, empties the queues (or creates them again, after moto's reset) and polls again."""
        self.pause()
        with self._lock:
            self._batches, self._executions, self._errors, self._workers = [], [], [], []
            self._seen = set()
        self.setup(self.account, self.region)
        sqs = self._clients("sqs", self.account, self.region)
        for url in (self.queue_url, self.dead_letter_url):
            sqs.purge_queue(QueueUrl=url)
        if self._pollers:
            self._active.set()

    # --- records ------------------------------------------------------------------------------------------------------

    def batches(self) -> list[Batch]:
        with self._lock:
            return [dataclasses.replace(b, executions=list(b.executions)) for b in self._batches]

    def executions(self) -> list[Execution]:
        with self._lock:
            return [dataclasses.replace(e) for e in self._executions]

    def errors(self) -> list[str]:
        """What went wrong in the mapping itself (a receive or delete moto refused), for a test's message."""
        with self._lock:
            return list(self._errors)

    def dead_letters(self) -> list[dict]:
        """The messages in the dead-letter queue now. They are received to be read: hidden for 30 s afterwards."""
        sqs = self._clients("sqs", self.account, self.region)
        letters = []
        while True:
            received = sqs.receive_message(QueueUrl=self.dead_letter_url, MaxNumberOfMessages=10,
                                           AttributeNames=["All"], VisibilityTimeout=30).get("Messages", [])
            if not received:
                return letters
            letters += received

    def wait_for(self, condition: Callable[["PushPipeline"], bool], timeout: float, what: str = "condition") -> None:
        """Until `condition(self)` holds (TimeoutError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not hold within {timeout} s; batches: {len(self.batches())}, "
                                   f"errors: {self.errors()}")
            time.sleep(0.05)

    # --- the event source mapping ------------------------------------------------------------------------------------

    def _poll(self, cycle: threading.Lock) -> None:
        carried: list[dict] = []  # received but left out of the last batch by the payload limit
        while not self._stopping.is_set():
            if not self._active.wait(timeout=0.2):
                carried = []  # paused: they come back after their visibility timeout, or are purged
                continue
            with cycle:
                if not self._active.is_set() or self._stopping.is_set():
                    continue
                batch, carried, received = self._collect(carried)
                if batch and self._active.is_set() and not self._stopping.is_set():
                    self._invoke(batch, received)

    def _collect(self, carried: list[dict]) -> tuple[list[dict], list[dict], float]:
        """Receives until the batch holds `batch_size` messages, `batch_window` seconds have passed since its first
        message, or the next message would take the invocation's payload over Lambda's 6 MB: (the batch, the messages
        left for the next one, when the batch's first message was received: time.monotonic())."""
        sqs = self._clients("sqs", self.account, self.region)
        batch: list[dict] = []
        size = len(json.dumps({"Records": []}))
        first = time.monotonic() if carried else None
        pending = list(carried)
        while len(batch) < self.batch_size and self._active.is_set() and not self._stopping.is_set():
            if not pending:
                remaining = 2.0 if first is None else first + self.batch_window - time.monotonic()
                if first is not None and remaining <= 0:
                    break
                # A long poll (1 s) only while it cannot outlast the window: moto may answer an empty one up to a
                # second late.
                wait = 1 if remaining >= 2 else 0
                try:
                    pending = sqs.receive_message(
                        QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, self.batch_size - len(batch)),
                        WaitTimeSeconds=wait, AttributeNames=["All"],
                        MessageAttributeNames=["All"]).get("Messages", [])
                except Exception as error:  # noqa: BLE001 - moto being reset, or the queue gone: try again
                    self._note(f"receive: {error!r}")
                    time.sleep(0.5)
                    break
                if not pending:
                    if not wait:
                        time.sleep(min(remaining, 0.05))
                    continue
                if first is None:
                    first = time.monotonic()
            record = sqs_record(pending[0], self.queue_arn, self.region)
            added = len(json.dumps(record)) + (2 if batch else 0)
            if batch and size + added >= MAX_REQUEST_BYTES:
                break
            batch.append(record)
            size += added
            pending.pop(0)
        return batch, pending, first or time.monotonic()

    def _invoke(self, records: list[dict], received: float) -> None:
        """One synchronous invocation; then the messages not reported as failed are deleted, and the executions the
        starter started are run. A batch held longer than the visibility timeout is noted (`errors()`): its messages
        may have been received again meanwhile, by this or another poller, which AWS rules out by refusing a mapping
        whose function's timeout exceeds the queue's visibility timeout."""
        ids = [r["messageId"] for r in records]
        request = urllib.request.Request(
            f"{self._lambda_url}/2015-03-31/functions/{self.function}/invocations",
            data=json.dumps({"Records": records}).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse"})
        invoked = time.time()
        answer, function_error = None, None
        try:
            with urllib.request.urlopen(request, timeout=INVOKE_TIMEOUT_SECONDS) as response:
                data = response.read()
                function_error = response.headers.get("X-Amz-Function-Error")
        except urllib.error.HTTPError as error:  # throttled, the function missing, a service error: the batch fails
            data = error.read()
            function_error = f"HTTP {error.code} {error.headers.get('x-amzn-ErrorType') or ''}".strip()
        except (urllib.error.URLError, OSError) as error:
            data, function_error = b"", f"invocation failed: {error!r}"
        answered = time.time()
        if time.monotonic() - received > self.visibility_timeout:
            self._note(f"a batch of {len(ids)} was held {time.monotonic() - received:.1f} s, longer than the visibility "
                       f"timeout ({self.visibility_timeout} s): its messages may have been received twice")
        try:
            answer = json.loads(data) if data else None
            valid = True
        except ValueError:
            answer, valid = data.decode(errors="replace"), False
        failed = None if function_error or not valid else failed_items(answer, ids)
        kept = ids if failed is None else failed
        self._delete([r for r in records if r["messageId"] not in kept])
        batch = Batch(invoked, answered, ids, [int(r["attributes"].get("ApproximateReceiveCount", 0)) for r in records],
                      answer, function_error, list(kept))
        with self._lock:
            self._batches.append(batch)
        started = self._discover()
        with self._lock:
            batch.executions.extend(started)

    def _delete(self, records: list[dict]) -> None:
        sqs = self._clients("sqs", self.account, self.region)
        for start in range(0, len(records), 10):
            entries = [{"Id": str(n), "ReceiptHandle": r["receiptHandle"]}
                       for n, r in enumerate(records[start:start + 10])]
            try:
                answer = sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as error:  # noqa: BLE001
                self._note(f"delete: {error!r}")
                continue
            for failure in answer.get("Failed", []):
                self._note(f"delete: {failure}")

    def _discover(self) -> list[str]:
        """Starts a run of each push execution running in Step Functions (moto) not run yet: the starter's."""
        if self._run_execution is None:
            return []
        sfn = self._clients("stepfunctions", self.account, self.region)
        found = []
        with self._discovering:
            machines = {}
            for page in sfn.get_paginator("list_state_machines").paginate():
                machines.update({m["name"]: m["stateMachineArn"] for m in page["stateMachines"]})
            for name, fan_out in self._machines.items():
                if name not in machines:
                    continue
                pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=machines[name],
                                                                      statusFilter="RUNNING")
                for execution in (e for page in pages for e in page["executions"]):
                    arn = execution["executionArn"]
                    if not execution["name"].startswith(EXECUTION_PREFIX) or arn in self._seen:
                        continue
                    self._seen.add(arn)
                    described = sfn.describe_execution(executionArn=arn)
                    record = Execution(arn, execution["name"], json.loads(described.get("input") or "{}"), fan_out,
                                       time.time())
                    worker = threading.Thread(target=self._run, args=(record,), name=f"push-run-{record.name}",
                                              daemon=True)
                    with self._lock:
                        self._executions.append(record)
                        self._workers.append(worker)
                    worker.start()
                    found.append(arn)
        return found

    def _run(self, record: Execution) -> None:
        status, error, report = None, None, None
        try:
            report = self._run_execution(copy.deepcopy(record.input), record.arn, record.fan_out)
            status = getattr(report, "status", None)
        except Exception as exc:  # noqa: BLE001 - recorded for the test, not raised in a daemon thread
            status, error = "ERROR", repr(exc)
        with self._lock:
            record.ended, record.status, record.error, record.report = time.time(), status, error, report

    def _note(self, error: str) -> None:
        with self._lock:
            self._errors.append(error)


def new_execution_name() -> str:
    """A push execution's name as the starter makes them (for stand-ins of the starter in tests)."""
    return f"{EXECUTION_PREFIX}{uuid.uuid4().hex}"
