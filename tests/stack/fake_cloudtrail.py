"""Strict in-memory fake of AWS CloudTrail: LookupEvents, and the trails' read operations.

Test support only, not product code. moto (our mock for the rest of AWS) answers LookupEvents
with 500 NotImplemented, so this stands in for that operation, and for the reads of the trails
(`DescribeTrails`, `GetTrailStatus`, `GetEventSelectors`) with which a function can tell whether the
account-region's API Gateway calls reach EventBridge at all: the functions reach CloudTrail only here
(AWS_ENDPOINT_URL_CLOUDTRAIL). It speaks awsJson1_1 as the AWS SDK does (`POST /`, `X-Amz-Target`,
`application/x-amz-json-1.1`) and mimics the service's validation, paging and rate limits
(LookupEvents 2 requests per second by default, the get and describe operations 10: CloudTrail's
quotas), so the agent's retry and paging code meets the same errors it would meet in AWS. Signatures
are not verified; only the presence of a SigV4 `Authorization` header is.

Each account and region has its own event history and its own rate limit, as in CloudTrail: a request
reads the region its signature names, in the account its access key acts in (`account_of`, by default
the fake's one account; the local stack asks its AWS proxy, which saw the assumed roles' keys issued).

Trails (`add_trail`) belong to an account and a home region; a multi-region trail also applies to every
other region of its account, where CloudTrail lists it as a shadow trail and reads it only by its ARN.
CloudTrail hands an API Gateway call to EventBridge ("AWS API Call via CloudTrail") only when a trail that
logs it applies to the call's account-region: logging, and selecting management write events. When one
does, `add_event` calls the `on_event(account, region, record)` hook (the local stack's delivery to
EventBridge, push.py), which decides when the event arrives.

Usable in-process (`FakeCloudTrail(...).start()`) or as a process:

    python fake_cloudtrail.py --host 127.0.0.1 --port 8082

Hooks (no authentication): `POST /_fake/events` (JSON list of events to add), `POST /_fake/trails`
(JSON list of `add_trail` arguments), `POST /_fake/reset`, `GET /_fake/requests` (LookupEvents request
bodies received),
`POST /_fake/settings` ({"throttling": {"seed": n, "rate": r} or null}, see `set_throttling`).
"""

from __future__ import annotations

import argparse
import collections
import copy
import itertools
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import urlsplit

from aws_proxy import app_name
from iam_check import MEMBER_ROLE, Use
from local_server import LocalServer, send_json

LOOKUP_EVENTS = "CloudTrail_20131101.LookupEvents"
# The access key and region a SigV4 Authorization header names.
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/")
OPERATIONS = ("LookupEvents", "DescribeTrails", "GetTrailStatus", "GetEventSelectors")
# X-Amz-Target -> operation: the short form and the one the AWS SDKs send.
ACCEPTED_TARGETS = {target: operation for operation in OPERATIONS
                    for target in (f"CloudTrail_20131101.{operation}",
                                   f"com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.{operation}")}
CONTENT_TYPE = "application/x-amz-json-1.1"
# CloudTrail's quota for its get, describe and list operations (LookupEvents has its own, `rate_per_second`).
READ_RATE_PER_SECOND = 10
# Trails per region, shadow trails included; CloudTrail's quota, which cannot be raised.
MAX_TRAILS_PER_REGION = 5
# CloudTrail does not send events over 256 KB to EventBridge.
MAX_EVENTBRIDGE_EVENT_BYTES = 256 * 1024
READ_WRITE_TYPES = ("All", "WriteOnly", "ReadOnly")
# A trail name: 3 to 128 letters, digits, periods, underscores and dashes, starting and ending with a letter or digit,
# no two of the punctuation marks in a row.
TRAIL_NAME = re.compile(r"^(?=.{3,128}$)[A-Za-z0-9](?:[A-Za-z0-9]|[._-](?=[A-Za-z0-9]))*$")
TRAIL_ARN = re.compile(r"^arn:aws[\w-]*:cloudtrail:([a-z0-9-]+):(\d{12}):trail/(.+)$")
MAX_RESULTS = 50
USERNAME = "fake-user"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example key, not a credential

# How each LookupAttribute key reads its values off a stored event.
LOOKUP_ATTRIBUTES = {
    "EventId": lambda e: [e["EventId"]],
    "EventName": lambda e: [e["EventName"]],
    "ReadOnly": lambda e: [e["ReadOnly"]],
    "Username": lambda e: [e["Username"]],
    "ResourceType": lambda e: [r.get("ResourceType") for r in e["Resources"]],
    "ResourceName": lambda e: [r.get("ResourceName") for r in e["Resources"]],
    "EventSource": lambda e: [e["EventSource"]],
    "AccessKeyId": lambda e: [e["AccessKeyId"]],
}


class _ServiceError(Exception):
    """An AWS error response: `{"__type": name, "message": message}`."""

    def __init__(self, name: str, message: str, status: int = 400):
        super().__init__(message)
        self.name = name
        self.message = message
        self.status = status


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _iso8601(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Trail:
    """A trail as CloudTrail keeps it: in its account, homed in one region, applying to every region of the account
    when multi-region. Its event selectors are basic (`read_write`, `management`) unless `advanced` holds advanced
    ones."""

    name: str
    account: str
    region: str
    multi_region: bool
    logging: bool
    read_write: str
    management: bool
    advanced: list[dict] | None
    started: float | None
    stopped: float | None

    @property
    def arn(self) -> str:
        return f"arn:aws:cloudtrail:{self.region}:{self.account}:trail/{self.name}"

    def applies_to(self, account: str, region: str) -> bool:
        return self.account == account and (self.region == region or self.multi_region)

    def description(self) -> dict:
        """DescribeTrails' item: the same in the home region and, for a multi-region trail, in its shadows."""
        custom = self.advanced is not None or (self.read_write, self.management) != ("All", True)
        return {
            "Name": self.name,
            "S3BucketName": f"aws-cloudtrail-logs-{self.account}-{self.name.lower()}",
            "IncludeGlobalServiceEvents": self.multi_region,
            "IsMultiRegionTrail": self.multi_region,
            "HomeRegion": self.region,
            "TrailARN": self.arn,
            "LogFileValidationEnabled": True,
            "HasCustomEventSelectors": custom,
            "HasInsightSelectors": False,
            "IsOrganizationTrail": False,
        }

    def status(self) -> dict:
        status: dict[str, Any] = {"IsLogging": self.logging}
        if self.started is not None:
            status.update(StartLoggingTime=self.started, TimeLoggingStarted=_iso8601(self.started))
        if self.stopped is not None:
            status.update(StopLoggingTime=self.stopped, TimeLoggingStopped=_iso8601(self.stopped))
        return status

    def selectors(self) -> dict:
        if self.advanced is not None:
            return {"TrailARN": self.arn, "AdvancedEventSelectors": copy.deepcopy(self.advanced)}
        return {"TrailARN": self.arn, "EventSelectors": [{
            "ReadWriteType": self.read_write, "IncludeManagementEvents": self.management, "DataResources": [],
            "ExcludeManagementEventSources": []}]}

    def logs(self, record: dict) -> bool:
        """Whether this trail, logging, selects the management event `record`."""
        if not self.logging:
            return False
        if self.advanced is not None:
            return any(_selects(selector.get("FieldSelectors") or [], record) for selector in self.advanced)
        read_only = bool(record.get("readOnly"))
        return self.management and (self.read_write == "All" or (self.read_write == "ReadOnly") == read_only)


# What an advanced event selector's fields read off a management event's record; a selector on any other field
# (resources.type, resources.ARN...) selects data events only.
_RECORD_FIELDS = {
    "eventCategory": lambda record: "Management" if record.get("managementEvent") else "Data",
    "readOnly": lambda record: "true" if record.get("readOnly") else "false",
    "eventSource": lambda record: record.get("eventSource"),
    "eventName": lambda record: record.get("eventName"),
    "eventType": lambda record: record.get("eventType"),
}
_CONDITIONS = {
    "Equals": lambda value, options: value in options,
    "NotEquals": lambda value, options: value not in options,
    "StartsWith": lambda value, options: any(value.startswith(o) for o in options),
    "NotStartsWith": lambda value, options: not any(value.startswith(o) for o in options),
    "EndsWith": lambda value, options: any(value.endswith(o) for o in options),
    "NotEndsWith": lambda value, options: not any(value.endswith(o) for o in options),
}


def _selects(field_selectors: list[dict], record: dict) -> bool:
    """An advanced event selector selects an event when every one of its field selectors matches it."""
    for field_selector in field_selectors:
        read = _RECORD_FIELDS.get(field_selector.get("Field"))
        if read is None:
            return False
        value = read(record) or ""
        for condition, options in field_selector.items():
            if condition in _CONDITIONS and not _CONDITIONS[condition](value, list(options)):
                return False
    return True


def _advanced_selectors(read_write: str, management: bool) -> list[dict]:
    """The advanced event selectors the console writes for the same choice of events."""
    if not management:
        return [{"Name": "Log all S3 data events", "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Data"]},
            {"Field": "resources.type", "Equals": ["AWS::S3::Object"]}]}]
    fields = [{"Field": "eventCategory", "Equals": ["Management"]}]
    if read_write != "All":
        fields.append({"Field": "readOnly", "Equals": ["true" if read_write == "ReadOnly" else "false"]})
    return [{"Name": "Management events selector", "FieldSelectors": fields}]


class FakeCloudTrail(LocalServer):
    """In-memory CloudTrail. All state is guarded by one lock."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_per_second: int = 2,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        log_requests: bool = False,
        account_of=None,
        region_disabled=None,
        read_rate_per_second: int = READ_RATE_PER_SECOND,
    ):
        self._rate_per_second = rate_per_second
        self._read_rate_per_second = read_rate_per_second
        self._region = region
        self._account_id = account_id
        self._account_of = account_of or (lambda access_key: account_id)
        self._region_disabled = region_disabled or (lambda account, region: False)
        self._log_requests = log_requests
        self._lock = threading.Lock()
        self._sequence = itertools.count()  # tie-breaker for events with equal EventTime
        self._callers: set[str] = set()
        self._uses: set[Use] = set()
        # Called with (account, region, record) for each event CloudTrail hands to EventBridge (module docstring); it
        # must return at once (add_event waits for it).
        self.on_event: Callable[[str, str, dict], None] | None = None
        self.reset()
        self._serve(host, port, log_requests)

    # --- test hooks (also served under /_fake/) ----------------------------------------------

    # Keyword names are the JSON keys of `POST /_fake/events`, so a hook item can be splatted in.
    def add_event(
        self,
        eventName: str,
        eventSource: str = "apigateway.amazonaws.com",
        eventTime: float | None = None,
        readOnly: bool = False,
        requestParameters: dict | None = None,
        responseElements: dict | None = None,
        resources: list[dict] | None = None,
        account: str | None = None,
        region: str | None = None,
    ) -> dict:
        """Stores one management event of `account` in `region` (the fake's own by default) and returns it as
        LookupEvents will. `resources` items are {"ResourceType", "ResourceName"}; `eventTime` is epoch seconds.

        An API Gateway write is also handed to `on_event` when a trail that logs it applies to the account-region, as
        CloudTrail hands it to EventBridge (module docstring); read-only calls are not (EventBridge receives only
        write management events unless a rule opts in to read-only ones, which the agent's does not)."""
        account = account or self._account_id
        region = region or self._region
        event_time = time.time() if eventTime is None else eventTime
        event_id = str(uuid.uuid4())
        record = {
            "eventVersion": "1.08",
            "userIdentity": {
                "type": "IAMUser",
                "arn": f"arn:aws:iam::{account}:user/{USERNAME}",
                "accountId": account,
                "accessKeyId": ACCESS_KEY_ID,
                "userName": USERNAME,
            },
            "eventTime": _iso8601(event_time),
            "eventSource": eventSource,
            "eventName": eventName,
            "awsRegion": region,
            "readOnly": readOnly,
            "requestParameters": requestParameters,
            "responseElements": responseElements,
            "eventID": event_id,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": account,
            "eventCategory": "Management",
        }
        event = {
            "EventId": event_id,
            "EventName": eventName,
            "ReadOnly": "true" if readOnly else "false",
            "AccessKeyId": ACCESS_KEY_ID,
            "EventTime": event_time,
            "EventSource": eventSource,
            "Username": USERNAME,
            "Resources": list(resources or []),
            "CloudTrailEvent": json.dumps(record),
        }
        with self._lock:
            self._events.append((next(self._sequence), (account, region), event))
            delivered = (eventSource == "apigateway.amazonaws.com" and not readOnly and record["managementEvent"]
                         and len(event["CloudTrailEvent"].encode()) <= MAX_EVENTBRIDGE_EVENT_BYTES
                         and any(t.applies_to(account, region) and t.logs(record) for t in self._trails.values()))
            on_event = self.on_event
        if delivered and on_event:
            on_event(account, region, copy.deepcopy(record))
        return copy.deepcopy(event)

    def add_trail(
        self,
        name: str,
        account: str | None = None,
        region: str | None = None,
        multi_region: bool = True,
        logging: bool = True,
        read_write: str = "All",
        management: bool = True,
        advanced: bool | list[dict] = False,
    ) -> dict:
        """Creates a trail of `account` homed in `region` (the fake's own by default) and returns its DescribeTrails
        item. Its event selector logs `read_write` ("All", "WriteOnly", "ReadOnly") management events when
        `management`; with `advanced`, the same choice is written as advanced event selectors, or `advanced` is the
        list of advanced event selectors itself ({"Name", "FieldSelectors": [{"Field", "Equals"...}]})."""
        account = account or self._account_id
        region = region or self._region
        if not TRAIL_NAME.match(name):
            raise ValueError(f"InvalidTrailNameException: {name!r} is not a valid trail name")
        if read_write not in READ_WRITE_TYPES:
            raise ValueError(f"InvalidEventSelectorsException: ReadWriteType must be one of {READ_WRITE_TYPES}")
        selectors = None
        if advanced is True:
            selectors = _advanced_selectors(read_write, management)
        elif advanced:
            selectors = copy.deepcopy(list(advanced))
        now = time.time()
        trail = _Trail(name, account, region, multi_region, logging, read_write, management, selectors,
                       started=now if logging else None, stopped=None if logging else now)
        with self._lock:
            # A multi-region trail's shadows take its name in every region of the account.
            if any(t.account == account and t.name == name and (t.region == region or t.multi_region or multi_region)
                   for t in self._trails.values()):
                raise ValueError(f"TrailAlreadyExistsException: trail {name} already exists for {account}")
            regions = {t.region for t in self._trails.values() if t.account == account} | {region}
            for where in regions if multi_region else {region}:
                applying = [t for t in self._trails.values() if t.applies_to(account, where)]
                if len(applying) >= MAX_TRAILS_PER_REGION:
                    raise ValueError(f"MaximumNumberOfTrailsExceededException: {account} has "
                                     f"{MAX_TRAILS_PER_REGION} trails in {where} already")
            self._trails[trail.arn] = trail
        return trail.description()

    def set_trail_logging(self, name: str, logging: bool, account: str | None = None,
                          region: str | None = None) -> None:
        """StartLogging / StopLogging of the trail named `name` homed in `region` (the fake's own by default)."""
        arn = f"arn:aws:cloudtrail:{region or self._region}:{account or self._account_id}:trail/{name}"
        with self._lock:
            trail = self._trails.get(arn)
            if trail is None:
                raise KeyError(f"TrailNotFoundException: Unknown trail: {arn}")
            if trail.logging != logging:
                trail.logging = logging
                setattr(trail, "started" if logging else "stopped", time.time())

    def set_throttling(self, seed: int | None, rate: float = 0.3) -> None:
        """Seeded random throttling on top of the rate limit: each LookupEvents request draws from one
        `random.Random(seed)` and with probability `rate` is answered ThrottlingException. The same seed and requests
        in the same order meet the same throttling. `seed=None` turns it off, as does reset()."""
        if seed is not None and not 0 <= rate <= 1:
            raise ValueError(f"throttling rate must be in [0, 1], not {rate!r}")
        with self._lock:
            self._throttling = None if seed is None else (random.Random(seed), float(rate))

    def callers(self) -> set[str]:
        """The functions (`app/<name>` of the SDK's user agent) that called LookupEvents since the fake started, not
        forgotten by reset()."""
        with self._lock:
            return set(self._callers)

    def uses(self) -> set[Use]:
        """Every kind of call each function made since the fake started (not forgotten by reset()), as IAM authorizes
        it (iam_check): `cloudtrail:<operation>` on `*` (LookupEvents, DescribeTrails) or on the trail's ARN
        (GetTrailStatus, GetEventSelectors); in a target account, the member role's."""
        with self._lock:
            return set(self._uses)

    def requests(self, operation: str = "LookupEvents") -> list:
        """Every request body of `operation` received (parsed JSON), throttled ones included."""
        with self._lock:
            return copy.deepcopy(self._requests if operation == "LookupEvents" else self._other_requests[operation])

    def reset(self) -> None:
        with self._lock:
            self._events: list[tuple[int, tuple[str, str], dict]] = []
            self._trails: dict[str, _Trail] = {}  # by ARN
            self._requests: list = []
            self._other_requests: dict[str, list] = collections.defaultdict(list)
            self._tokens: dict[str, tuple[str, tuple]] = {}  # NextToken -> (query, cursor)
            self._admitted: dict[tuple[str, str], collections.deque[float]] = {}
            self._throttling: tuple[random.Random, float] | None = None

    # --- request pipeline --------------------------------------------------------------------

    def _dispatch(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path
        length = int(request.headers.get("Content-Length") or 0)
        raw_body = request.rfile.read(length) if length else b""
        if path.startswith("/_fake/"):
            status, payload = self._hook(request.command, path, raw_body)
            send_json(request, status, payload)
            return
        try:
            status, payload = 200, self._api_call(request, path, raw_body)
        except _ServiceError as error:
            status, payload = error.status, {"__type": error.name, "message": error.message}
        send_json(request, status, payload, {"x-amzn-RequestId": str(uuid.uuid4())}, CONTENT_TYPE)

    def _api_call(self, request: BaseHTTPRequestHandler, path: str, raw_body: bytes) -> dict:
        if not (request.headers.get("Authorization") or "").startswith("AWS4-HMAC-SHA256"):
            raise _ServiceError(
                "MissingAuthenticationTokenException", "Missing Authentication Token", 403
            )
        target = request.headers.get("X-Amz-Target") or ""
        if (request.command, path) != ("POST", "/") or target not in ACCEPTED_TARGETS:
            raise _ServiceError("UnknownOperationException", f"Unknown operation {target!r}")
        operation = ACCEPTED_TARGETS[target]
        try:
            body = json.loads(raw_body or b"{}")
        except ValueError:
            body = raw_body.decode(errors="replace")
        app = app_name(request.headers)
        scope = CREDENTIAL.search(request.headers.get("Authorization") or "")
        access_key, region = scope.groups() if scope else ("", self._region)
        where = (self._account_of(access_key), region)
        if self._region_disabled(*where):
            raise _ServiceError("UnrecognizedClientException", "The security token included in the request is invalid.",
                                403)
        # In a target account, the call is its member role's.
        caller = app if where[0] == self._account_id else MEMBER_ROLE
        if operation != "LookupEvents":
            return self._trail_operation(operation, body, where, caller if app else "")
        with self._lock:
            self._requests.append(body)
            if app:
                self._callers.add(caller)
                self._uses.add(Use(caller, "cloudtrail:LookupEvents", "*"))
            if self._throttling and self._throttling[0].random() < self._throttling[1]:
                raise _ServiceError("ThrottlingException", "Rate exceeded")  # takes no place in the rate window
            self._admit(where, self._rate_per_second)
        if not isinstance(body, dict):
            raise _ServiceError("SerializationException", "Request body is not a JSON object")
        return self._lookup_events(body, where)

    def _admit(self, where: tuple, rate: int) -> None:
        """Rolling one-second window over the account-region's admitted requests (caller holds the lock)."""
        now = time.monotonic()
        admitted = self._admitted.setdefault(where, collections.deque())
        while admitted and now - admitted[0] >= 1.0:
            admitted.popleft()
        if len(admitted) >= rate:
            raise _ServiceError("ThrottlingException", "Rate exceeded")
        admitted.append(now)

    # --- the trails' read operations -----------------------------------------------------------

    def _trail_operation(self, operation: str, body: Any, where: tuple[str, str], caller: str) -> dict:
        """DescribeTrails, GetTrailStatus, GetEventSelectors: IAM authorizes the first on `*`, the others on the trail
        named (by its ARN, whether or not it exists), before anything else."""
        name = None
        if isinstance(body, dict):
            name = body.get("Name") if operation == "GetTrailStatus" else body.get("TrailName")
        with self._lock:
            self._other_requests[operation].append(body)
            if caller:
                resource = "*"
                if operation != "DescribeTrails":
                    resource = name if isinstance(name, str) and name.startswith("arn:") else \
                        f"arn:aws:cloudtrail:{where[1]}:{where[0]}:trail/{name}"
                self._uses.add(Use(caller, f"cloudtrail:{operation}", resource))
            # The get and describe operations share one quota, apart from LookupEvents'.
            self._admit((*where, "read"), self._read_rate_per_second)
        if not isinstance(body, dict):
            raise _ServiceError("SerializationException", "Request body is not a JSON object")
        if operation == "DescribeTrails":
            return self._describe_trails(body, where)
        with self._lock:
            trail = self._trail_named(name, where)
            return trail.status() if operation == "GetTrailStatus" else trail.selectors()

    def _describe_trails(self, body: dict, where: tuple[str, str]) -> dict:
        """The trails that apply to the request's account-region: those homed there and, unless includeShadowTrails
        is false, the account's multi-region trails homed elsewhere. Named trails: a name matches only a trail homed in
        this region, an ARN any of the account's trails; names that match nothing are left out, not refused."""
        names, shadows = body.get("trailNameList"), body.get("includeShadowTrails", True)
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise _ServiceError("SerializationException", "trailNameList must be a list of strings")
        if not isinstance(shadows, bool):
            raise _ServiceError("SerializationException", "includeShadowTrails must be a boolean")
        account, region = where
        for name in names or []:
            if not name.startswith("arn:"):
                _check_trail_name(name)
        with self._lock:
            trails = [t for t in self._trails.values() if t.account == account]
            if names:
                listed = [t for t in trails
                          if t.arn in names or (t.name in names and t.region == region)]
            else:
                listed = [t for t in trails if t.region == region or (shadows and t.multi_region)]
            return {"trailList": [t.description() for t in sorted(listed, key=lambda t: (t.region != region, t.name))]}

    def _trail_named(self, name: Any, where: tuple[str, str]) -> _Trail:
        """The trail a GetTrailStatus or GetEventSelectors request names (caller holds the lock): by name, a trail homed
        in the request's region; by ARN, also a multi-region trail homed elsewhere (its shadow here)."""
        account, region = where
        if not isinstance(name, str) or not name:
            raise _ServiceError("InvalidTrailNameException", "Trail name or ARN cannot be blank.")
        if name.startswith("arn:"):
            if not TRAIL_ARN.match(name):
                raise _ServiceError("InvalidTrailNameException", f"Invalid trail ARN: {name}")
            trail = self._trails.get(name)
            if trail is None or not trail.applies_to(account, region):
                raise _ServiceError("TrailNotFoundException", f"Unknown trail: {name} for the user: {account}")
            return trail
        _check_trail_name(name)
        arn = f"arn:aws:cloudtrail:{region}:{account}:trail/{name}"
        trail = self._trails.get(arn)
        if trail is None:
            raise _ServiceError("TrailNotFoundException", f"Unknown trail: {arn} for the user: {account}")
        return trail

    def _lookup_events(self, body: dict, where: tuple[str, str]) -> dict:
        attributes = body.get("LookupAttributes") or []
        if not isinstance(attributes, list) or len(attributes) > 1:
            raise _ServiceError(
                "InvalidLookupAttributesException", "You can specify at most one lookup attribute"
            )
        for attribute in attributes:
            key, value = (
                (attribute.get("AttributeKey"), attribute.get("AttributeValue"))
                if isinstance(attribute, dict)
                else (None, None)
            )
            if key not in LOOKUP_ATTRIBUTES or not isinstance(value, str) or not value:
                raise _ServiceError(
                    "InvalidLookupAttributesException",
                    f"AttributeKey must be one of {sorted(LOOKUP_ATTRIBUTES)} "
                    "and AttributeValue a non-empty string",
                )
        max_results = body.get("MaxResults", MAX_RESULTS)
        if not (_is_integer(max_results) and 1 <= max_results <= MAX_RESULTS):
            raise _ServiceError(
                "InvalidMaxResultsException", f"MaxResults must be between 1 and {MAX_RESULTS}"
            )
        start, end = body.get("StartTime"), body.get("EndTime")
        for name, value in (("StartTime", start), ("EndTime", end)):
            if value is not None and not _is_number(value):
                raise _ServiceError("SerializationException", f"{name} must be epoch seconds")
        if start is not None and end is not None and start > end:
            raise _ServiceError("InvalidTimeRangeException", "StartTime is after EndTime")

        query = json.dumps([where, attributes, start, end], sort_keys=True)
        with self._lock:
            cursor = None
            if "NextToken" in body:
                # A token is only valid for the query that issued it, as in CloudTrail.
                issued = self._tokens.get(body["NextToken"])
                if issued is None or issued[0] != query:
                    raise _ServiceError("InvalidNextTokenException", "Invalid NextToken")
                cursor = issued[1]
            # Newest first; the sequence number keeps the order total and stable, and paging
            # resumes after the cursor's key so events added between pages shift nothing.
            ordered = sorted(
                ((-event["EventTime"], -sequence), event)
                for sequence, located, event in self._events
                if located == where
            )
            matching = [
                (key, event)
                for key, event in ordered
                if (cursor is None or key > cursor)
                and (start is None or event["EventTime"] >= start)
                and (end is None or event["EventTime"] <= end)
                and all(
                    a["AttributeValue"] in LOOKUP_ATTRIBUTES[a["AttributeKey"]](event)
                    for a in attributes
                )
            ]
            page = matching[:max_results]
            response: dict[str, Any] = {"Events": copy.deepcopy([event for _, event in page])}
            if len(matching) > max_results:
                token = uuid.uuid4().hex
                self._tokens[token] = (query, page[-1][0])
                response["NextToken"] = token
        return response

    def _hook(self, method: str, path: str, raw_body: bytes) -> tuple[int, Any]:
        if (method, path) == ("POST", "/_fake/events"):
            try:
                return 201, [self.add_event(**item) for item in json.loads(raw_body)]
            except (ValueError, TypeError) as error:
                return 400, {"message": f"bad events: {error}"}
        if (method, path) == ("POST", "/_fake/trails"):
            try:
                return 201, [self.add_trail(**item) for item in json.loads(raw_body)]
            except (ValueError, TypeError) as error:
                return 400, {"message": f"bad trails: {error}"}
        if (method, path) == ("POST", "/_fake/reset"):
            self.reset()
            return 200, {}
        if (method, path) == ("GET", "/_fake/requests"):
            return 200, self.requests()
        if (method, path) == ("POST", "/_fake/settings"):
            try:
                settings = json.loads(raw_body)
                if "throttling" in settings:
                    self.set_throttling(**(settings["throttling"] or {"seed": None}))  # null: off
            except (ValueError, TypeError) as error:
                return 400, {"message": f"bad settings: {error}"}
            return 200, {}
        return 404, {"message": f"No test hook {method} {path}"}


def _check_trail_name(name: str) -> None:
    if not TRAIL_NAME.match(name):
        raise _ServiceError("InvalidTrailNameException",
                            "Trail name or ARN can only contain uppercase letters, lowercase letters, numbers, periods "
                            "(.), hyphens (-), and underscores (_), start and end with a letter or number, and be 3 to "
                            "128 characters long.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--rate-per-second", type=int, default=2)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--account-id", default="123456789012")
    args = parser.parse_args()
    fake = FakeCloudTrail(
        args.host, args.port, args.rate_per_second, args.region, args.account_id, log_requests=True
    )
    fake.serve_until_interrupted("fake CloudTrail")


if __name__ == "__main__":
    main()
