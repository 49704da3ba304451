"""Strict in-memory fake of AWS CloudTrail's LookupEvents operation.

Test support only, not product code. moto (our mock for the rest of AWS) answers LookupEvents
with 500 NotImplemented, so this stands in for that one operation. It speaks awsJson1_1 as the
AWS SDK does (`POST /`, `X-Amz-Target`, `application/x-amz-json-1.1`) and mimics the service's
validation, paging and rate limit (2 requests per second by default), so the agent's retry and
paging code meets the same errors it would meet in AWS. Signatures are not verified; only the
presence of a SigV4 `Authorization` header is.

Each account and region has its own event history and its own rate limit, as in CloudTrail: a request
reads the region its signature names, in the account its access key acts in (`account_of`, by default
the fake's one account; the local stack asks its AWS proxy, which saw the assumed roles' keys issued).

Usable in-process (`FakeCloudTrail(...).start()`) or as a process:

    python fake_cloudtrail.py --host 127.0.0.1 --port 8082

Hooks (no authentication): `POST /_fake/events` (JSON list of events to add),
`POST /_fake/reset`, `GET /_fake/requests` (LookupEvents request bodies received),
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
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from aws_proxy import app_name
from iam_check import MEMBER_ROLE
from local_server import LocalServer, send_json

LOOKUP_EVENTS = "CloudTrail_20131101.LookupEvents"
# The access key and region a SigV4 Authorization header names.
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/")
ACCEPTED_TARGETS = (LOOKUP_EVENTS, f"com.amazonaws.cloudtrail.v20131101.{LOOKUP_EVENTS}")
CONTENT_TYPE = "application/x-amz-json-1.1"
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
    ):
        self._rate_per_second = rate_per_second
        self._region = region
        self._account_id = account_id
        self._account_of = account_of or (lambda access_key: account_id)
        self._region_disabled = region_disabled or (lambda account, region: False)
        self._log_requests = log_requests
        self._lock = threading.Lock()
        self._sequence = itertools.count()  # tie-breaker for events with equal EventTime
        self._callers: set[str] = set()
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
        LookupEvents will. `resources` items are {"ResourceType", "ResourceName"}; `eventTime` is epoch seconds."""
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
        return copy.deepcopy(event)

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

    def requests(self) -> list:
        """Every LookupEvents request body received (parsed JSON), throttled ones included."""
        with self._lock:
            return copy.deepcopy(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._events: list[tuple[int, tuple[str, str], dict]] = []
            self._requests: list = []
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
        with self._lock:
            self._requests.append(body)
            if app:
                # In a target account, the call is its member role's.
                self._callers.add(app if where[0] == self._account_id else MEMBER_ROLE)
            if self._throttling and self._throttling[0].random() < self._throttling[1]:
                raise _ServiceError("ThrottlingException", "Rate exceeded")  # takes no place in the rate window
            self._admit(where)
        if not isinstance(body, dict):
            raise _ServiceError("SerializationException", "Request body is not a JSON object")
        return self._lookup_events(body, where)

    def _admit(self, where: tuple[str, str]) -> None:
        """Rolling one-second window over the account-region's admitted requests (caller holds the lock)."""
        now = time.monotonic()
        admitted = self._admitted.setdefault(where, collections.deque())
        while admitted and now - admitted[0] >= 1.0:
            admitted.popleft()
        if len(admitted) >= self._rate_per_second:
            raise _ServiceError("ThrottlingException", "Rate exceeded")
        admitted.append(now)

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
