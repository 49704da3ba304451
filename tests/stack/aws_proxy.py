"""An HTTP proxy in front of the local AWS mock (moto) that enforces AWS's quotas.

Test support only, not product code. moto answers every request at once, however many arrive; AWS does not. The
Lambda functions' SDK traffic goes through this proxy (their `AWS_ENDPOINT_URL`), which forwards each request
unchanged, streams the answer back, and on the way:

- names each request's service (from the SigV4 credential scope) and operation, and counts them;
- keeps each forwarded call's request body and answer size (what DynamoDB and CloudWatch bill by);
- enforces API Gateway's management quota, shared by v1 and v2 calls, answering 429 as API Gateway does;
- answers injected faults with an AWS error in the request's protocol, so the SDK's own error parsing and retries run;
- throttles at random, seeded and reproducible (`set_throttling`), with each service's own throttling error;
- serves the deployments of HTTP and WebSocket APIs, which moto lacks (v2_deployments.py);
- answers `sts:AssumeRole` as STS does: AccessDenied unless the role exists and its trust policy admits the caller
  and external id (accounts.py); each request acts in the account of its access key, and API Gateway's quota is
  each account-region's own.

Usable in-process (`AwsProxy(moto_url).start()`) or as a process:

    python aws_proxy.py --upstream http://127.0.0.1:5000 --port 5001
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Callable
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from moto.core.cbor import CBORDecoder, CBOREncoder

from accounts import Accounts
from iam_check import MEMBER_ROLE, Use, use_of
from local_server import LocalServer, send_json
from v2_deployments import V2Deployments, moto_exists
from listing_pages import ListingPages

# "API Gateway quotas for creating, deploying and managing an API ... These quotas can't be increased": Total
# operations, 10 requests per second with a burst of 40, per account and Region (v1 and v2 management calls alike).
# https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
APIGATEWAY_RATE_PER_SECOND = 10
APIGATEWAY_BURST = 40

# Services that moved from awsQuery to a newer protocol and still name their errors in awsQuery's words
# (`aws.protocols#awsQueryCompatible`): CloudWatch, now RPC v2 CBOR (the Rust SDK) or JSON (botocore).
QUERY_COMPATIBLE = frozenset({"monitoring"})

# Each service's throttling error (status, code, message), as its SDKs meet it: API Gateway (v1 and v2 both sign as
# `apigateway`) answers 429 TooManyRequestsException, CloudWatch (`monitoring`) 400 Throttling.
THROTTLING_ERRORS = {
    "apigateway": (429, "TooManyRequestsException", "Too Many Requests"),
    "monitoring": (400, "Throttling", "Rate exceeded"),
}
# DynamoDB throttles item reads and writes with ProvisionedThroughputExceededException (on-demand tables too), its
# control plane with ThrottlingException.
DYNAMODB_ITEM_OPERATIONS = frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan",
                                      "BatchGetItem", "BatchWriteItem"})

# Headers that describe one connection, not the request (RFC 9110 section 7.6.1); `Expect` is answered by this proxy.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "expect"})
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
ACCESS_KEY = re.compile(r"Credential=([^/,\s]+)/")
RPC_V2_PATH = re.compile(r"/service/[^/]+/operation/([^/]+)")

# API Gateway is REST: the operation follows from method and path ({} is one path segment). The v2 API signs as
# `apigateway` too, hence the "(v2)" where both have an operation of the same name.
APIGATEWAY_OPERATIONS = [
    (method, re.compile(re.escape(template).replace(r"\{\}", "[^/]+")), name)
    for method, template, name in [
        ("GET", "/restapis", "GetRestApis"),
        ("GET", "/restapis/{}", "GetRestApi"),
        ("GET", "/restapis/{}/stages", "GetStages"),
        ("GET", "/restapis/{}/stages/{}", "GetStage"),
        ("GET", "/restapis/{}/stages/{}/exports/{}", "GetExport"),
        ("GET", "/domainnames", "GetDomainNames"),
        ("GET", "/domainnames/{}/basepathmappings", "GetBasePathMappings"),
        ("GET", "/v2/apis", "GetApis"),
        ("GET", "/v2/apis/{}", "GetApi"),
        ("GET", "/v2/apis/{}/stages", "GetStages (v2)"),
        ("GET", "/v2/domainnames", "GetDomainNames (v2)"),
        ("GET", "/v2/domainnames/{}/apimappings", "GetApiMappings"),
        ("GET", "/tags/{}", "GetTags"),
    ]
]


@dataclass(frozen=True)
class Call:
    """What the proxy makes of one request."""

    service: str  # signing name from the credential scope, e.g. "apigateway", "dynamodb", "monitoring"
    region: str
    operation: str
    protocol: str  # "json", "query", "rpc-v2-cbor" or "rest-json"
    content_type: str = ""


def rest_template(method: str, path: str) -> str:
    """`METHOD /collection/{id}/...` for a REST path no table names: resource names alternate with identifiers."""
    segments = path.strip("/").split("/")
    version = [segments.pop(0)] if segments and re.fullmatch(r"v\d+", segments[0]) else []
    named = [s if i % 2 == 0 else "{id}" for i, s in enumerate(segments)]
    return f"{method} /" + "/".join(version + named)


def identify(method: str, path: str, query: str, headers, body: bytes) -> Call:
    """The service, region, operation and protocol of an AWS SDK request."""
    credential = headers.get("Authorization") or "Credential=" + "".join(parse_qs(query).get("X-Amz-Credential", []))
    scope = CREDENTIAL_SCOPE.search(credential)
    region, service = scope.groups() if scope else ("", "unknown")
    content_type = headers.get("Content-Type") or ""
    if target := headers.get("X-Amz-Target"):
        return Call(service, region, target.rsplit(".", 1)[-1], "json", content_type)
    if (rpc := RPC_V2_PATH.fullmatch(path)) and headers.get("smithy-protocol") == "rpc-v2-cbor":
        return Call(service, region, rpc.group(1), "rpc-v2-cbor")
    form = parse_qs(body.decode("utf-8", "replace")) if "x-www-form-urlencoded" in content_type else {}
    if action := form.get("Action") or parse_qs(query).get("Action"):
        return Call(service, region, action[0], "query")
    if service == "apigateway":
        for route_method, pattern, name in APIGATEWAY_OPERATIONS:
            if method == route_method and pattern.fullmatch(path):
                return Call(service, region, name, "rest-json")
    return Call(service, region, rest_template(method, path), "rest-json")


def error_answer(call: Call, status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    """An AWS error as the service of `call` sends it, in the shape its SDKs parse."""
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id}
    fault = "Sender" if status < 500 else "Receiver"  # awsQuery's word for who is to blame
    if call.service in QUERY_COMPATIBLE and call.protocol in ("json", "rpc-v2-cbor"):
        # The awsQuery code and fault, which query-compatible SDKs prefer to the body's __type.
        headers["x-amzn-query-error"] = f"{code};{fault}"
    if call.protocol == "json":  # awsJson1_0 / 1_1: the code is the body's __type
        headers["Content-Type"] = call.content_type or "application/x-amz-json-1.0"
        return status, headers, json.dumps({"__type": code, "message": message}).encode()
    if call.protocol == "query":  # awsQuery: an XML ErrorResponse; Type is Sender for client faults
        headers["Content-Type"] = "text/xml"
        body = (f"<ErrorResponse><Error><Type>{fault}</Type><Code>{escape(code)}</Code>"
                f"<Message>{escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
        return status, headers, body.encode()
    if call.protocol == "rpc-v2-cbor":
        headers.update({"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"})
        return status, headers, CBOREncoder().encode({"__type": code, "message": message})
    # restJson1 (API Gateway): the SDKs take the code from x-amzn-ErrorType (the Rust SDK prefers it to the body),
    # the message from the body's `message`.
    headers.update({"Content-Type": "application/json", "x-amzn-ErrorType": code})
    return status, headers, json.dumps({"message": message}).encode()


def throttling_error(call: Call) -> tuple[int, str, str]:
    """The error with which the service of `call` throttles it: (status, code, message)."""
    if call.service in THROTTLING_ERRORS:
        return THROTTLING_ERRORS[call.service]
    if call.service == "dynamodb" and call.operation in DYNAMODB_ITEM_OPERATIONS:
        return 400, "ProvisionedThroughputExceededException", "Throughput exceeds the current capacity of your table"
    # Otherwise the common AWS code: `Throttling` in awsQuery services (STS), `ThrottlingException` elsewhere.
    return 400, "Throttling" if call.protocol == "query" else "ThrottlingException", "Rate exceeded"


class TokenBucket:
    """`rate` tokens a second up to `burst`, starting full; each request takes one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]):
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens, self._updated = float(burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


@dataclass
class _Fault:
    service: str
    operation: str | None
    status: int
    error_code: str
    message: str
    remaining: int


@dataclass
class _Throttling:
    random: random.Random
    rate: float
    services: tuple[str, ...]


@dataclass
class _Rewrite:
    service: str
    operation: str
    field: str
    old: str
    new: str
    remaining: int


@dataclass(frozen=True)
class Forwarded:
    service: str
    operation: str
    body: bytes
    answer_bytes: int
    # The function that made the call (`app/<name>` in its user agent), "" when unnamed.
    app: str = ""
    path: str = ""


@dataclass(frozen=True)
class Received:
    """One metered request as it arrived, answered or not."""

    at: float  # epoch seconds
    service: str
    operation: str
    app: str


@dataclass
class _Delay:
    service: str
    operation: str | None
    seconds: float
    remaining: int | None


APP_NAME = re.compile(r"\bapp/([A-Za-z0-9!#$%&'*+.^_`|~-]+)")


def app_name(headers) -> str:
    """The application name in an AWS SDK's user agent (`app/<name>`), or ""."""
    for header in ("x-amz-user-agent", "User-Agent"):
        if found := APP_NAME.search(headers.get(header) or ""):
            return found.group(1)
    return ""


class AwsProxy(LocalServer):
    """Forwards to `upstream` (moto's URL). Counters and faults are guarded by one lock, never held while forwarding."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] = time.monotonic, timeout: float = 60, log_requests: bool = False):
        self._upstream = urlsplit(upstream)
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self.v2_deployments = V2Deployments(moto_exists(self._upstream.hostname, self._upstream.port, timeout))
        self.accounts = Accounts(upstream)
        self.listing_pages = ListingPages()
        self._metered = True
        self._uses: set[Use] = set()  # kept across reset(): a whole test session's calls
        self.reset()
        self._serve(host, port, log_requests)

    # --- test hooks ------------------------------------------------------------------------------------------------

    def add_fault(self, service: str, operation: str | None = None, *, status: int, error_code: str, count: int = 1,
                  message: str | None = None) -> None:
        """The next `count` requests to `service` (and `operation`, if given) are answered with this AWS error instead
        of being forwarded, e.g. ("secretsmanager", "GetSecretValue", status=400, error_code="ThrottlingException")."""
        with self._lock:
            self._faults.append(_Fault(service, operation, status, error_code, message or f"injected {error_code}",
                                       count))

    def add_delay(self, service: str, operation: str | None, seconds: float, count: int | None = None) -> None:
        """The next `count` (None: all) requests to `service` (and `operation`, if given) are answered `seconds` late:
        a service slower than AWS."""
        with self._lock:
            self._delays.append(_Delay(service, operation, seconds, count))

    def uses(self) -> set[Use]:
        """Every kind of call each of the agent's functions made since the proxy started (not forgotten by reset()), as
        IAM authorizes it (iam_check)."""
        with self._lock:
            return set(self._uses)

    def received(self) -> list[Received]:
        """Every metered request, in the order it arrived, with its time and the function that made it."""
        with self._lock:
            return list(self._received)

    def add_rewrite(self, service: str, operation: str, field: str, old: str, new: str, count: int = 1) -> None:
        """The next `count` answers of `operation` have every `field` whose value is `old` set to `new`, in the
        answer's own protocol (CBOR, JSON or XML): AWS answers moto never gives, such as
        ("monitoring", "GetMetricData", "StatusCode", "Complete", "PartialData"). An error answer takes one of the
        `count` and passes unchanged."""
        with self._lock:
            self._rewrites.append(_Rewrite(service, operation, field, old, new, count))

    def set_throttling(self, seed: int | None, rate: float = 0.3,
                       services: tuple[str, ...] = ("apigateway", "monitoring")) -> None:
        """Seeded random throttling: each call to one of `services` (signing names, as `identify` gives them) draws from
        one `random.Random(seed)` and with probability `rate` is answered its service's throttling error
        (`throttling_error`) instead of being forwarded, and counted in throttled(). The same seed and calls in the same
        order meet the same throttling. The quota and targeted faults win over it, yet the call still draws. `seed=None`
        turns it off, as does reset(); calls inside unmetered() neither draw nor are throttled."""
        throttling = None
        if seed is not None:
            if not 0 <= rate <= 1:
                raise ValueError(f"throttling rate must be in [0, 1], not {rate!r}")
            if isinstance(services, str) or not services:
                raise ValueError(f"throttling services must be a non-empty tuple of names, not {services!r}")
            throttling = _Throttling(random.Random(seed), float(rate), tuple(services))
        with self._lock:
            self._throttling = throttling

    @contextlib.contextmanager
    def unmetered(self):
        """Seeding only: inside this block API Gateway calls are neither counted nor held to the quota, and no call is
        throttled at random."""
        with self._lock:
            self._metered = False
        try:
            yield
        finally:
            with self._lock:
                self._metered = True

    def counts(self) -> dict[tuple[str, str], int]:
        """Requests received per (service, operation), throttled and faulted ones included."""
        with self._lock:
            return dict(self._counts)

    def forwarded(self) -> list[Forwarded]:
        """Each metered call forwarded to moto, in order, with its request body and the size of its answer: what
        DynamoDB's capacity units and the metrics CloudWatch bills follow."""
        with self._lock:
            return list(self._forwarded)

    def throttled(self) -> dict[tuple[str, str], int]:
        """Requests answered 429 by the API Gateway quota or throttled at random (set_throttling), per (service,
        operation)."""
        with self._lock:
            return dict(self._throttled)

    def reset(self) -> None:
        """Forgets counts, faults and random throttling, and refills the quotas."""
        with self._lock:
            self._counts: collections.Counter = collections.Counter()
            self._forwarded: list[Forwarded] = []
            self._throttled: collections.Counter = collections.Counter()
            self._faults: list[_Fault] = []
            self._rewrites: list[_Rewrite] = []
            self._delays: list[_Delay] = []
            self._received: list[Received] = []
            self._throttling: _Throttling | None = None
            # API Gateway's quota is per account and Region.
            self._buckets: dict[tuple[str, str], TokenBucket] = {}

    # --- request pipeline ------------------------------------------------------------------------------------------

    def _dispatch(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        body = _read_body(request)
        call = identify(request.command, url.path, url.query, request.headers, body)
        key = (call.service, call.operation)
        app = app_name(request.headers)
        access_key = (ACCESS_KEY.search(request.headers.get("Authorization") or "") or [None, ""])[1]
        account = self.accounts.account_of(access_key)
        assume_role = call.service == "sts" and call.operation == "AssumeRole"
        refusal = self.accounts.refusal(access_key, body) if assume_role else None
        with self._lock:
            metered = self._metered or call.service != "apigateway"
            if metered:
                self._counts[key] += 1
                self._received.append(Received(time.time(), call.service, call.operation, app))
            # A target account's calls are its member role's, not the function role's.
            caller = MEMBER_ROLE if app and self.accounts.is_assumed(access_key) else app
            if use := use_of(caller, call.service, call.operation, request.command, url.path, body):
                self._uses.add(use)
            delay = self._take_delay(call)
            error, throttled_at_random = None, False
            throttle = self._draw_throttling(call)  # drawn first, so the sequence depends only on the calls
            if refusal:
                error = (403, "AccessDenied", refusal)
            elif call.service != "sts" and self.accounts.region_disabled(account, call.region):
                # As AWS answers in an opt-in region the account has not enabled.
                error = (403, "UnrecognizedClientException", "The security token included in the request is invalid.")
            elif call.service == "apigateway" and metered and not self._bucket((account, call.region)).take():
                self._throttled[key] += 1
                error = (429, "TooManyRequestsException", "Too Many Requests")
            elif fault := self._take_fault(call):
                error = (fault.status, fault.error_code, fault.message)
            elif throttle:
                self._throttled[key] += 1
                error, throttled_at_random = throttling_error(call), True
            rewrite = None if error else self._take_rewrite(call)
        v2_rewrites = []
        if not error and call.service == "apigateway":
            for stand_in in (self.v2_deployments.intercept(request.command, url.path, body, dict(request.headers)),
                             self.listing_pages.page(request.command, url.path, url.query)):
                if isinstance(stand_in, tuple):
                    status, answer = stand_in
                    # API Gateway names its errors in this header (REST-JSON protocol).
                    error_type = {400: "BadRequestException", 404: "NotFoundException"}.get(status)
                    send_json(request, status, answer, {"x-amzn-ErrorType": error_type} if error_type else None)
                    return
                if stand_in:
                    v2_rewrites.append(stand_in)
        if delay:
            time.sleep(delay)  # this request's own thread: others go on
        if not error:
            capture = self.accounts.record_issued if assume_role else None
            answered = self._forward(request, body, rewrite, _chain(v2_rewrites) if v2_rewrites else None, capture)
            if metered:
                with self._lock:
                    self._forwarded.append(Forwarded(call.service, call.operation, body, answered, app, url.path))
            return
        status, headers, data = error_answer(call, *error)
        if throttled_at_random and error[0] == 429:
            headers["Retry-After"] = "1"  # TooManyRequestsException's retryAfterSeconds, a header in the API model
        request.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)

    def _bucket(self, where: tuple[str, str]) -> TokenBucket:
        if where not in self._buckets:
            self._buckets[where] = TokenBucket(APIGATEWAY_RATE_PER_SECOND, APIGATEWAY_BURST, self._clock)
        return self._buckets[where]

    def _draw_throttling(self, call: Call) -> bool:
        """Whether random throttling picks this call (caller holds the lock)."""
        throttling = self._throttling
        if throttling is None or not self._metered or call.service not in throttling.services:
            return False
        return throttling.random.random() < throttling.rate

    def _take_fault(self, call: Call) -> _Fault | None:
        for fault in self._faults:
            if fault.service == call.service and fault.operation in (None, call.operation):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _take_delay(self, call: Call) -> float:
        for delay in self._delays:
            if delay.service == call.service and delay.operation in (None, call.operation):
                if delay.remaining is not None:
                    delay.remaining -= 1
                    if delay.remaining <= 0:
                        self._delays.remove(delay)
                return delay.seconds
        return 0.0

    def _take_rewrite(self, call: Call) -> _Rewrite | None:
        for rewrite in self._rewrites:
            if (rewrite.service, rewrite.operation) == (call.service, call.operation):
                rewrite.remaining -= 1
                if rewrite.remaining <= 0:
                    self._rewrites.remove(rewrite)
                return rewrite
        return None

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes, rewrite: _Rewrite | None = None,
                 json_rewrite: Callable[[dict], dict] | None = None,
                 capture: Callable[[bytes], None] | None = None) -> int:
        """Forwards the request; returns the size of the answer's body. `capture` is given the whole answer."""
        upstream = http.client.HTTPConnection(self._upstream.hostname, self._upstream.port, timeout=self._timeout)
        try:
            upstream.putrequest(request.command, request.path, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    upstream.putheader(name, value)
            if body or "Content-Length" in request.headers:
                upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body or None)
            response = upstream.getresponse()
        except (OSError, http.client.HTTPException) as error:
            upstream.close()
            send_json(request, 502, {"message": f"AWS mock at {self._upstream.netloc} unreachable: {error}"})
            return 0
        try:
            if rewrite:
                return _send_rewritten(request, response, rewrite)
            if json_rewrite:
                return _send_json_rewritten(request, response, json_rewrite)
            if capture:
                data = response.read()
                if response.status == 200:
                    capture(data)
                return _send_buffered(request, response, data)
            return _stream(request, response)
        except (OSError, http.client.HTTPException):
            request.close_connection = True  # the status line is out; all that is left is to drop the connection
            return 0
        finally:
            upstream.close()


def _chain(rewrites: list[Callable[[dict], dict]]) -> Callable[[dict], dict]:
    """One JSON rewrite applying `rewrites` in order."""
    def chained(answer: dict) -> dict:
        for rewrite in rewrites:
            answer = rewrite(answer)
        return answer
    return chained


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in (request.headers.get("Transfer-Encoding") or "").lower():
        body = b""
        while size := int(request.rfile.readline().split(b";")[0], 16):
            body += request.rfile.read(size)
            request.rfile.readline()
        while request.rfile.readline().strip():  # trailers, up to the blank line
            pass
        return body
    length = int(request.headers.get("Content-Length") or 0)
    return request.rfile.read(length) if length else b""


def _send_rewritten(request: BaseHTTPRequestHandler, response: http.client.HTTPResponse, rewrite: _Rewrite) -> int:
    """Sends the upstream answer with `rewrite` applied to its fields, decoded and encoded again in its protocol."""
    data = response.read()
    if response.status != 200 or not data:
        return _send_buffered(request, response, data)

    def edit(value):
        if isinstance(value, dict):
            return {key: rewrite.new if key == rewrite.field and item == rewrite.old else edit(item)
                    for key, item in value.items()}
        return [edit(item) for item in value] if isinstance(value, list) else value

    content_type = response.getheader("Content-Type") or ""
    if "cbor" in content_type:
        data = CBOREncoder().encode(edit(CBORDecoder().decode(data)))
    elif "json" in content_type:
        data = json.dumps(edit(json.loads(data))).encode()
    else:  # awsQuery and REST-XML answers
        field, old, new = escape(rewrite.field), escape(rewrite.old), escape(rewrite.new)
        data = data.replace(f"<{field}>{old}</{field}>".encode(), f"<{field}>{new}</{field}>".encode())
    return _send_buffered(request, response, data)


def _send_json_rewritten(request: BaseHTTPRequestHandler, response: http.client.HTTPResponse,
                         rewrite: Callable[[dict], dict]) -> int:
    """Sends the upstream JSON answer through `rewrite` when it succeeded, else as it is."""
    data = response.read()
    if response.status == 200 and data:
        data = json.dumps(rewrite(json.loads(data))).encode()
    return _send_buffered(request, response, data)


def _send_buffered(request: BaseHTTPRequestHandler, response: http.client.HTTPResponse, data: bytes) -> int:
    """Sends the upstream answer's status and headers with `data` as its body; returns its size."""
    request.send_response_only(response.status, response.reason)
    for name, value in response.getheaders():
        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
            request.send_header(name, value)
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)
    return len(data)


def _stream(request: BaseHTTPRequestHandler, response: http.client.HTTPResponse) -> int:
    """Sends the upstream answer on as it arrives: status, headers, body (re-chunked if it came without a length);
    returns the body's size."""
    request.send_response_only(response.status, response.reason)  # upstream's own Date and Server headers follow
    bodiless = request.command == "HEAD" or response.status in (204, 304) or response.status < 200
    chunked = response.getheader("Content-Length") is None and not bodiless
    for name, value in response.getheaders():
        if name.lower() not in HOP_BY_HOP:
            request.send_header(name, value)
    if chunked:
        request.send_header("Transfer-Encoding", "chunked")
    request.end_headers()
    sent = 0
    while data := response.read1(65536):
        request.wfile.write(b"%X\r\n%s\r\n" % (len(data), data) if chunked else data)
        sent += len(data)
    if chunked:
        request.wfile.write(b"0\r\n\r\n")
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the AWS mock's URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()
    AwsProxy(args.upstream, args.host, args.port, log_requests=True).serve_until_interrupted("AWS quota proxy")


if __name__ == "__main__":
    main()
