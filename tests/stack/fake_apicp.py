"""Strict in-memory fake of webMethods API Control Plane (APICP).

Test support only, not product code. It serves the slice of APICP the agent talks to (runtime
registration, runtime types, API documents, heartbeats, metrics) and validates every request
against the vendor's OpenAPI documents in `apicp-openapi/` beside this file (see its README), so a
request the real service would reject is rejected here too, with an `ErrorMessage` body naming the
bad field. Where the documents leave the service a choice (page sizes, answers they do not document),
settings select among the plausible behaviours so that tests can meet each of them.

Usable in-process (`FakeControlPlane(...).start()`) or as a process:

    python fake_apicp.py --host 127.0.0.1 --port 8081 --username agent --password secret

Hooks under `/_fake/` (no authentication) let tests inject faults and inspect state:
`POST /_fake/faults`, `GET /_fake/state`, `GET /_fake/requests`, `POST /_fake/reset`,
`POST /_fake/settings` ({"page_size_cap": n or null, "unknown_api_behaviour": mode, "chaos": {...} or null}),
`DELETE /_fake/runtimes/{id}` (as an administrator deleting the runtime), `POST /_fake/refused` (a JSON list of API ids
the service refuses, see `refuse_apis`).

Chaos (`set_chaos`, or `POST /_fake/settings` with {"chaos": {"seed": 7, "rate": 0.3, "kinds": [...], "slow_ms": 3000,
"path": "regex"}} or {"chaos": null}): seeded, reproducible random faults. Each product request whose path matches
`path` draws from one `random.Random(seed)`; with probability `rate` it meets one of `kinds`, chosen uniformly:
- "500", "502", "503", "429": answered with that status and an `errorDetails` body, not processed (nothing stored);
  429 carries `Retry-After: 1`;
- "reset": processed as normal (state changed), then the connection is reset with no answer: the answer is lost;
- "slow": processed as normal, answered only after `slow_ms` (longer than the agent's client timeout);
- "reset-before" (opt-in, not in CHAOS_KINDS): the connection is reset before processing (nothing stored).
The same seed and the same requests in the same order meet the same faults. Targeted faults (`add_fault`) take
precedence; chaos still draws for the request, so the chaos sequence depends only on the requests. reset() turns
chaos off.

`requests()` records, per product request, `fault` (the kind met, None if none; "delay" for a targeted fault that only
delays; a targeted status as its string, e.g. "503") and `processed` (the request went through authentication,
validation and its handler as normal, so its state change happened). `status` is the status the client was sent, or,
for "reset" and "slow", the one the handler produced (the client never saw it); 0 for "reset-before".
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import functools
import hmac
import json
import os
import random
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.media_types.exceptions import MediaTypeNotFound
from openapi_core.validation.request.exceptions import ParameterValidationError
from openapi_core.validation.schemas.exceptions import InvalidSchemaValue
from local_server import LocalServer, private_ca, send_json
from werkzeug.datastructures import Headers

SPEC_NAMES = ("runtime-management", "runtime-type", "api-management", "runtime-metrics")
DEFAULT_PAGE_SIZE = 20
# The documents name a server-side maximum of objects per page (`service.maximum.assets`, 20 in their example), so a
# page may hold fewer items than `size` asks. The default cap sits below the 500 the agent asks for, so a client that
# stops at the first short page misses items; only an empty page ends a list.
DEFAULT_PAGE_SIZE_CAP = 100

# PUT and DELETE of an API the runtime does not hold: the documents give no answer for it (PUT lists 200, 400, 401,
# 500; DELETE 200, 401, 500), so each mode names one plausible answer for each, and every answer occurs in some mode:
# PUT 404 or 400 rejects it (errorDetails), PUT 200 or 201 creates the API from the body; DELETE 204 or 200 is empty.
_UNKNOWN_API_ANSWERS = {
    "put-404,delete-404": (404, 404),
    "put-400,delete-204": (400, 204),
    "put-creates-200,delete-200": (200, 200),
    "put-creates-201,delete-204": (201, 204),
}
UNKNOWN_API_BEHAVIOURS = tuple(_UNKNOWN_API_ANSWERS)
DEFAULT_UNKNOWN_API_BEHAVIOUR = "put-404,delete-404"

# Chaos fault kinds (see the module docstring); "reset-before" is opt-in only.
CHAOS_KINDS = ("500", "502", "503", "429", "reset", "slow")
ALL_CHAOS_KINDS = CHAOS_KINDS + ("reset-before",)
_PROCESSED = (None, "delay", "reset", "slow")  # faults that still let the request be processed as normal

Response = tuple[int, Any]  # (status, JSON payload or None for an empty body)


def spec_dir() -> Path:
    """The OpenAPI documents: $APICP_OPENAPI_DIR, else the copy kept beside this file, so a clone needs nothing else."""
    override = os.environ.get("APICP_OPENAPI_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "apicp-openapi"


@dataclass(frozen=True)
class _Spec:
    openapi: OpenAPI
    base_path: str  # path part of the document's `servers` URL
    paths: frozenset[str]


@functools.lru_cache(maxsize=None)
def _load_specs(directory: Path) -> dict[str, _Spec]:
    """Parses each document once per process; the YAML is large (base64 icons in examples)."""
    specs = {}
    for name in SPEC_NAMES:
        document = yaml.safe_load((directory / f"{name}.yaml").read_text())
        # The server URL is templated ('{protocol}://{hostname}:{port}/api/...'); drop the braces
        # so urlsplit can find the path.
        server_url = re.sub(r"[{}]", "", document["servers"][0]["url"])
        specs[name] = _Spec(
            openapi=OpenAPI.from_dict(document),
            base_path=urlsplit(server_url).path.rstrip("/"),
            paths=frozenset(document["paths"]),
        )
    return specs


def _errors(*messages: str) -> dict:
    return {"errorDetails": list(messages)}


def _runtime_not_found(runtime_id: str) -> dict:
    return _errors(f"Runtime with Id {runtime_id} not found")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _field(root: str, parts) -> str:
    """Renders a jsonschema error path such as ['tags', 0] as 'tags[0]'."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    return text if text and not text.startswith("[") else root + text


def _describe(error: Exception) -> list[str]:
    """Readable messages for one openapi-core validation error, naming the offending field."""
    if isinstance(error, ParameterValidationError):
        root = f"{error.location} parameter {error.name}"
    else:
        root = "body"
    cause = error.__cause__
    if isinstance(cause, MediaTypeNotFound):
        return [
            f"Content-Type {cause.mimetype!r} is not supported, use one of {cause.availableMimetypes}"
        ]
    if isinstance(cause, InvalidSchemaValue):
        return [f"{_field(root, e.absolute_path)}: {e.message}" for e in cause.schema_errors]
    if isinstance(error, ParameterValidationError) and cause is not None:
        return [f"{root}: {cause}"]
    return [str(error)]


@dataclass
class _OpenAPIRequest:
    """Adapter implementing openapi-core's Request protocol."""

    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str
    body: bytes | None


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern
    spec: str
    handler: Callable[[_Call], Response]


@dataclass(frozen=True)
class _Call:
    """What a route handler gets once authentication and validation have passed."""

    path: dict[str, str]
    query: dict[str, Any]  # unmarshalled by openapi-core, so page/size are ints
    body: Any


@dataclass
class _Fault:
    method: str | None
    path: re.Pattern
    status: int
    remaining: int
    delay_ms: int
    skip: int = 0


@dataclass
class _Chaos:
    random: random.Random
    rate: float
    kinds: tuple[str, ...]
    slow_ms: int
    path: re.Pattern


def _abort(request: BaseHTTPRequestHandler) -> None:
    """Closes the connection abortively (RST, no answer): the client sees ECONNRESET, as when a proxy or the service
    drops it."""
    request.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    request.close_connection = True
    request.rfile.close()  # the socket's last file reference, so close() really closes it, now
    request.connection.close()


def _paged(items: list, query: dict, cap: int | None) -> list:
    # The service treats a missing, zero or negative page/size as its default, and never serves more than `cap`.
    page = max(query.get("page", 1), 1)
    size = query.get("size", DEFAULT_PAGE_SIZE)
    size = size if size >= 1 else DEFAULT_PAGE_SIZE
    size = min(size, cap) if cap else size
    return items[(page - 1) * size : page * size]


class FakeControlPlane(LocalServer):
    """In-memory APICP. All state is guarded by one lock; handlers never block while holding it."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "agent",
        password: str = "secret",
        runtime_types: tuple[str, ...] | list[str] = (),
        log_requests: bool = False,
        page_size_cap: int | None = DEFAULT_PAGE_SIZE_CAP,
        unknown_api_behaviour: str = DEFAULT_UNKNOWN_API_BEHAVIOUR,
    ):
        self._specs = _load_specs(spec_dir())
        self.set_page_size_cap(page_size_cap)
        self.set_unknown_api_behaviour(unknown_api_behaviour)
        self._credentials = f"{username}:{password}".encode()
        self._owner = {"name": username, "type": "USER"}
        self._log_requests = log_requests
        self._lock = threading.Lock()
        self._routes = self._build_routes()
        now = _now_ms()
        self._preloaded_types = {}
        for name in runtime_types:
            runtime_type = self._new_runtime_type({"name": name}, now)
            self._preloaded_types[runtime_type["id"]] = runtime_type
        self.reset()
        self._serve(host, port, log_requests)

    # --- test hooks (also served under /_fake/) ----------------------------------------------

    def add_fault(
        self,
        path: str,
        method: str | None = None,
        status: int = 503,
        count: int = 1,
        delay_ms: int = 0,
        skip: int = 0,
    ) -> None:
        """After `skip` of them pass, the next `count` product requests whose path matches the regex
        `path` (re.search) and, if given, `method` wait `delay_ms`, then answer `status` (0: carry on
        normally)."""
        fault = _Fault(
            method.upper() if method else None, re.compile(path), status, count, delay_ms, skip
        )
        with self._lock:
            self._faults.append(fault)

    def set_chaos(
        self,
        seed: int | None,
        rate: float = 0.3,
        kinds: tuple[str, ...] = CHAOS_KINDS,
        slow_ms: int = 3000,
        path: str = ".*",
    ) -> None:
        """Seeded random faults on product requests whose path matches the regex `path` (module docstring);
        `seed=None` turns them off. Raises ValueError on a bad setting. Not kept by reset()."""
        chaos = None
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ValueError(f"chaos seed must be an integer, not {seed!r}")
            if not 0 <= rate <= 1:
                raise ValueError(f"chaos rate must be in [0, 1], not {rate!r}")
            kinds = tuple(kinds)
            if not kinds or any(kind not in ALL_CHAOS_KINDS for kind in kinds):
                raise ValueError(f"chaos kinds must be some of {ALL_CHAOS_KINDS}, not {kinds!r}")
            if isinstance(slow_ms, bool) or not isinstance(slow_ms, int) or slow_ms < 0:
                raise ValueError(f"chaos slow_ms must be a non-negative integer, not {slow_ms!r}")
            try:
                pattern = re.compile(path)
            except re.error as error:
                raise ValueError(f"chaos path: {error}") from error
            chaos = _Chaos(random.Random(seed), float(rate), kinds, slow_ms, pattern)
        with self._lock:
            self._chaos = chaos

    def clear_faults(self) -> None:
        """Drops the targeted faults not yet used up."""
        with self._lock:
            self._faults.clear()

    def set_credentials(self, username: str, password: str) -> None:
        """Rotates the accepted credentials, as an administrator would on the real service."""
        with self._lock:
            self._credentials = f"{username}:{password}".encode()

    def set_page_size_cap(self, cap: int | None) -> None:
        """Lists serve at most `cap` items a page whatever `size` asks (None: as many as asked). Kept by reset()."""
        if cap is not None and cap < 1:
            raise ValueError(f"page size cap must be at least 1, not {cap}")
        self._page_size_cap = cap

    def set_unknown_api_behaviour(self, mode: str) -> None:
        """How PUT and DELETE of an unknown API are answered: one of UNKNOWN_API_BEHAVIOURS. Kept by reset()."""
        if mode not in _UNKNOWN_API_ANSWERS:
            raise ValueError(f"unknown_api_behaviour must be one of {UNKNOWN_API_BEHAVIOURS}, not {mode!r}")
        self._unknown_api_behaviour = mode

    def delete_runtime(self, runtime_id: str) -> None:
        """Deletes the runtime and its APIs, as an administrator would in the control plane's UI; the agent then meets
        an unknown runtime. Received heartbeats and metrics stay in state()."""
        with self._lock:
            if self._runtimes.pop(runtime_id, None) is None:
                raise KeyError(f"no runtime {runtime_id}")
            self._apis.pop(runtime_id, None)

    def refuse_apis(self, api_ids: list[str]) -> None:
        """The service refuses to create, update or delete these API ids with a 400 and its `errorDetails`, as it refuses
        a document it finds invalid (a rule of the tenant, a conflict with an API another agent publishes); the agent
        must go on with the others. An empty list refuses none. reset() refuses none."""
        with self._lock:
            self._refused = set(api_ids)

    def add_api(self, runtime_id: str, document: dict) -> None:
        """Adds an API to a registered runtime, as another agent or an administrator would."""
        with self._lock:
            self._store_new_api(self._apis.setdefault(runtime_id, {}), runtime_id, document)

    def remove_api(self, runtime_id: str, api_id: str) -> None:
        """Removes one API from a runtime, as an administrator would in the control plane's UI."""
        with self._lock:
            del self._apis[runtime_id][api_id]

    def state(self) -> dict:
        """What the fake holds. `metrics` lists every report stored, one entry per accepted POST (a report stored
        twice appears twice): {runtimeId, body (as posted, with its `timestamp`), receivedAt}."""
        with self._lock:
            return copy.deepcopy(
                {
                    "runtimeTypes": list(self._runtime_types.values()),
                    "runtimes": self._runtimes,
                    "apis": {
                        runtime_id: {api_id: api["apiDocument"] for api_id, api in apis.items()}
                        for runtime_id, apis in self._apis.items()
                    },
                    "heartbeats": self._heartbeats,
                    "metrics": self._metrics,
                }
            )

    def requests(self) -> list[dict]:
        """Every product request handled: {method, path, query ({name: [values]}), status, fault, processed}
        (module docstring)."""
        with self._lock:
            return copy.deepcopy(self._requests)

    def reset(self) -> None:
        """Forgets everything except the runtime types given to the constructor."""
        with self._lock:
            self._runtime_types = dict(self._preloaded_types)
            self._runtimes: dict[str, dict] = {}
            self._apis: dict[str, dict[str, dict]] = {}
            self._heartbeats: list[dict] = []
            self._metrics: list[dict] = []
            self._requests: list[dict] = []
            self._faults: list[_Fault] = []
            self._chaos: _Chaos | None = None
            self._refused: set[str] = set()

    # --- request pipeline --------------------------------------------------------------------

    def _build_routes(self) -> list[_Route]:
        table = [
            ("runtime-management", "POST", "/v2/runtimes", self._register_runtime),
            ("runtime-management", "GET", "/v2/runtimes", self._list_runtimes),
            ("runtime-management", "GET", "/v2/runtimes/{id}", self._get_runtime),
            ("runtime-management", "PUT", "/v2/runtimes/{id}", self._update_runtime),
            ("runtime-management", "DELETE", "/v1/runtimes/{id}", self._delete_runtime),
            ("runtime-type", "GET", "/runtimes/types", self._list_runtime_types),
            ("runtime-type", "POST", "/runtimes/types", self._create_runtime_type),
            ("api-management", "GET", "/runtimes/{runtimeId}/apis", self._list_apis),
            ("api-management", "POST", "/runtimes/{runtimeId}/apis", self._create_api),
            ("api-management", "GET", "/runtimes/{runtimeId}/apis/{apiId}", self._get_api),
            ("api-management", "PUT", "/runtimes/{runtimeId}/apis/{apiId}", self._update_api),
            ("api-management", "DELETE", "/runtimes/{runtimeId}/apis/{apiId}", self._delete_api),
            (
                "runtime-metrics",
                "POST",
                "/api/engine/v2/runtimes/heartbeats/bulk",
                self._bulk_heartbeats,
            ),
            ("runtime-metrics", "POST", "/api/engine/v2/runtimes/heartbeat", self._heartbeat),
            (
                "runtime-metrics",
                "POST",
                "/api/engine/v2/runtimes/{runtime_id}/metrics",
                self._store_metrics,
            ),
        ]
        routes = []
        for spec_name, method, template, handler in table:
            spec = self._specs[spec_name]
            # Fail at construction, not mid-test, if the documents stop defining a served path.
            if template not in spec.paths:
                raise ValueError(f"{spec_name}.yaml does not define {template}")
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(spec.base_path + template))
            routes.append(_Route(method, re.compile(regex), spec_name, handler))
        return routes

    def _dispatch(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        raw_body = request.rfile.read(length) if length else b""
        if url.path.startswith("/_fake/"):
            send_json(request, *self._hook(request.command, url.path, raw_body))
            return
        fault, slow_ms = self._take_fault(request.command, url.path)
        extra_headers = {}
        if fault == "reset-before":
            status, payload = 0, None
        elif fault is not None and fault.isdigit():  # an injected status: answered without processing
            status, payload = int(fault), _errors("injected fault")
            if status == 429:
                extra_headers["Retry-After"] = "1"
        else:
            status, payload = self._product(request, url.path, url.query, raw_body)
            if status == 401:
                extra_headers["WWW-Authenticate"] = 'Basic realm="fake-apicp"'
        with self._lock:
            self._requests.append(
                {
                    "method": request.command,
                    "path": url.path,
                    "query": parse_qs(url.query, keep_blank_values=True),
                    "status": status,
                    "fault": fault,
                    "processed": fault in _PROCESSED,
                }
            )
        if fault in ("reset", "reset-before"):
            _abort(request)
            return
        if fault == "slow":
            time.sleep(slow_ms / 1000)  # no lock held, and each connection has its own thread: others go on
            # The client has given up on this connection by now; close it, saying so, lest it be reused.
            with contextlib.suppress(ConnectionError):
                send_json(request, status, payload, {**extra_headers, "Connection": "close"})
            request.close_connection = True
            return
        send_json(request, status, payload, extra_headers)

    def _product(self, request, path: str, query: str, raw_body: bytes) -> Response:
        method = request.command
        if not self._authorized(request.headers.get("Authorization")):
            return 401, None
        route, path_params = self._match(method, path)
        if route is None:
            return 404, _errors(f"No route for {method} {path}")
        # Spring's @RequestBody is required by default, whatever the documents say.
        if method in ("POST", "PUT") and not raw_body:
            return 400, _errors("Required request body is missing")
        headers = Headers(list(request.headers.items()))  # case-insensitive, as HTTP is
        result = self._specs[route.spec].openapi.unmarshal_request(
            _OpenAPIRequest(
                host_url=self.url,
                path=path,
                method=method.lower(),
                parameters=RequestParameters(
                    query=_query_mapping(query), header=headers, cookie={}
                ),
                content_type=(headers.get("Content-Type") or "").lower(),
                body=raw_body or None,
            )
        )
        if result.errors:
            status = (
                415
                if any(isinstance(e.__cause__, MediaTypeNotFound) for e in result.errors)
                else 400
            )
            return status, _errors(*(m for e in result.errors for m in _describe(e)))
        body = json.loads(raw_body) if raw_body else None
        return route.handler(_Call(path_params, dict(result.parameters.query), body))

    def _authorized(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            credentials = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            return False
        return hmac.compare_digest(credentials, self._credentials)

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str]]:
        for route in self._routes:
            found = route.pattern.fullmatch(path)
            if found and route.method == method:
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None, {}

    def _take_fault(self, method: str, path: str) -> tuple[str | None, int]:
        """The fault this product request meets (None: none) and, for "slow", how long to hold the answer. A targeted
        fault wins over chaos; its delay is served here."""
        with self._lock:
            chaos, drawn = self._chaos, None
            # Drawn even when a targeted fault wins, so the chaos sequence depends only on the requests.
            if chaos and chaos.path.search(path) and chaos.random.random() < chaos.rate:
                drawn = chaos.random.choice(chaos.kinds)
            targeted = self._take_targeted(method, path)
        if targeted is None:
            return drawn, chaos.slow_ms if chaos else 0
        time.sleep(targeted.delay_ms / 1000)
        return (str(targeted.status) if targeted.status else "delay"), 0

    def _take_targeted(self, method: str, path: str) -> _Fault | None:
        """The targeted fault this request meets, if any (caller holds the lock)."""
        for fault in self._faults:
            if fault.method in (None, method) and fault.path.search(path):
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _hook(self, method: str, path: str, raw_body: bytes) -> Response:
        if (method, path) == ("GET", "/_fake/state"):
            return 200, self.state()
        if (method, path) == ("GET", "/_fake/requests"):
            return 200, self.requests()
        if (method, path) == ("POST", "/_fake/reset"):
            self.reset()
            return 200, None
        if (method, path) == ("POST", "/_fake/settings"):
            try:
                settings = json.loads(raw_body)
                if "page_size_cap" in settings:
                    self.set_page_size_cap(settings["page_size_cap"])
                if "unknown_api_behaviour" in settings:
                    self.set_unknown_api_behaviour(settings["unknown_api_behaviour"])
                if "chaos" in settings:
                    self.set_chaos(**(settings["chaos"] or {"seed": None}))  # null: off
            except (ValueError, TypeError) as error:
                return 400, _errors(f"bad settings: {error}")
            return 200, None
        if (method, path) == ("POST", "/_fake/refused"):
            self.refuse_apis(json.loads(raw_body))
            return 200, None
        if method == "DELETE" and path.startswith("/_fake/runtimes/"):
            try:
                self.delete_runtime(unquote(path.removeprefix("/_fake/runtimes/")))
            except KeyError as error:
                return 404, _errors(str(error))
            return 200, None
        if (method, path) == ("POST", "/_fake/faults"):
            try:
                spec = json.loads(raw_body)
                self.add_fault(
                    path=spec["path"],
                    method=spec.get("method"),
                    status=int(spec.get("status", 503)),
                    count=int(spec.get("count", 1)),
                    delay_ms=int(spec.get("delay_ms", 0)),
                    skip=int(spec.get("skip", 0)),
                )
            except (ValueError, TypeError, KeyError, re.error) as error:
                return 400, _errors(f"bad fault: {error!r}")
            return 201, None
        return 404, _errors(f"No test hook {method} {path}")

    # --- runtimes ----------------------------------------------------------------------------

    def _register_runtime(self, call: _Call) -> Response:
        runtime = call.body
        with self._lock:
            if not self._runtime_type_exists(runtime["type"]):
                return 400, _errors(f"type: runtime type {runtime['type']!r} does not exist")
            existing = self._runtimes.get(runtime.get("id")) or next(
                (r for r in self._runtimes.values() if r["name"] == runtime["name"]), None
            )
            if existing is not None:
                return 409, existing
            now = _now_ms()
            stored = {
                **runtime,
                "id": runtime.get("id") or str(uuid.uuid4()),
                "created": now,
                "lastModified": now,
                "owner": self._owner,
            }
            self._runtimes[stored["id"]] = stored
            return 201, stored

    def _list_runtimes(self, call: _Call) -> Response:
        with self._lock:
            return 200, _paged(list(self._runtimes.values()), call.query, self._page_size_cap)

    def _get_runtime(self, call: _Call) -> Response:
        with self._lock:
            runtime = self._runtimes.get(call.path["id"])
        if runtime is None:
            return 404, _runtime_not_found(call.path["id"])
        return 200, runtime

    def _update_runtime(self, call: _Call) -> Response:
        runtime_id = call.path["id"]
        with self._lock:
            current = self._runtimes.get(runtime_id)
            if current is None:
                return 404, _runtime_not_found(runtime_id)
            if not self._runtime_type_exists(call.body["type"]):
                return 400, _errors(f"type: runtime type {call.body['type']!r} does not exist")
            stored = {
                **call.body,
                "id": runtime_id,
                "created": current["created"],
                "lastModified": _now_ms(),
                "owner": current["owner"],
            }
            self._runtimes[runtime_id] = stored
            return 200, stored

    def _delete_runtime(self, call: _Call) -> Response:
        """Deletes the runtime "and its associated APIs" (runtime-management.yaml). The document lists 200, 401 and 500;
        an unknown runtime gets the 404 this fake answers on every other path naming one."""
        runtime_id = call.path["id"]
        with self._lock:
            if self._runtimes.pop(runtime_id, None) is None:
                return 404, _runtime_not_found(runtime_id)
            self._apis.pop(runtime_id, None)
        return 200, None

    def _runtime_type_exists(self, name: str) -> bool:
        return any(t["name"] == name for t in self._runtime_types.values())

    # --- runtime types -----------------------------------------------------------------------

    def _new_runtime_type(self, body: dict, now: int) -> dict:
        return {
            **body,
            "id": str(uuid.uuid4()),
            "created": now,
            "lastModified": now,
            "owner": self._owner,
        }

    def _list_runtime_types(self, call: _Call) -> Response:
        with self._lock:
            return 200, _paged(list(self._runtime_types.values()), call.query, self._page_size_cap)

    def _create_runtime_type(self, call: _Call) -> Response:
        with self._lock:
            # The document lists no 409 for this operation, so a duplicate is a plain 400.
            if self._runtime_type_exists(call.body["name"]):
                return 400, _errors(f"name: runtime type {call.body['name']!r} already exists")
            runtime_type = self._new_runtime_type(call.body, _now_ms())
            self._runtime_types[runtime_type["id"]] = runtime_type
            return 201, runtime_type

    # --- APIs --------------------------------------------------------------------------------

    def _runtime_apis(self, runtime_id: str) -> dict[str, dict] | None:
        """The runtime's APIs (caller holds the lock), or None if the runtime is unknown."""
        if runtime_id not in self._runtimes:
            return None
        return self._apis.setdefault(runtime_id, {})

    def _list_apis(self, call: _Call) -> Response:
        runtime_id = call.path["runtimeId"]
        with self._lock:
            apis = self._runtime_apis(runtime_id)
            if apis is None:
                return 404, _runtime_not_found(runtime_id)
            documents = [apis[api_id]["apiDocument"] for api_id in sorted(apis)]
            cap = self._page_size_cap
        return 200, _paged(documents, call.query, cap)

    def _refusal(self, api_id: str) -> Response | None:
        """The 400 of an API the service refuses (caller holds the lock)."""
        if api_id in self._refused:
            return 400, _errors(f"apiDocument: API {api_id} is refused by this tenant's rules")
        return None

    def _create_api(self, call: _Call) -> Response:
        runtime_id = call.path["runtimeId"]
        document = {**call.body, "id": call.body.get("id") or str(uuid.uuid4())}
        with self._lock:
            if refused := self._refusal(document["id"]):
                return refused
            apis = self._runtime_apis(runtime_id)
            if apis is None:
                return 404, _runtime_not_found(runtime_id)
            if document["id"] in apis:
                return 409, _errors(
                    f"API with Id {document['id']} already exist for Runtime with Id {runtime_id}"
                )
            return 201, self._store_new_api(apis, runtime_id, document)

    def _store_new_api(self, apis: dict, runtime_id: str, document: dict) -> dict:
        now = _now_ms()
        apis[document["id"]] = api = {
            "id": str(uuid.uuid4()),
            "apiId": document["id"],
            "runtimeId": runtime_id,
            "created": now,
            "lastModified": now,
            "owner": self._owner,
            "apiDocument": document,
        }
        return api

    def _get_api(self, call: _Call) -> Response:
        with self._lock:
            apis = self._runtime_apis(call.path["runtimeId"])
            api = None if apis is None else apis.get(call.path["apiId"])
        if api is None:
            return 404, self._not_found(call, apis)
        return 200, api

    def _update_api(self, call: _Call) -> Response:
        runtime_id, api_id = call.path["runtimeId"], call.path["apiId"]
        document = {**call.body, "id": api_id}
        with self._lock:
            if refused := self._refusal(api_id):
                return refused
            apis = self._runtime_apis(runtime_id)
            if apis is None:
                return 404, self._not_found(call, apis)
            if api_id not in apis:
                status, _ = _UNKNOWN_API_ANSWERS[self._unknown_api_behaviour]
                if status in (200, 201):
                    return status, self._store_new_api(apis, runtime_id, document)
                return status, self._not_found(call, apis)
            apis[api_id] = api = {**apis[api_id], "lastModified": _now_ms(), "apiDocument": document}
            return 200, api

    def _delete_api(self, call: _Call) -> Response:
        with self._lock:
            if refused := self._refusal(call.path["apiId"]):
                return refused
            apis = self._runtime_apis(call.path["runtimeId"])
            if apis is None:
                return 404, self._not_found(call, apis)
            if apis.pop(call.path["apiId"], None) is None:
                _, status = _UNKNOWN_API_ANSWERS[self._unknown_api_behaviour]
                return status, self._not_found(call, apis) if status == 404 else None
        return 200, None

    @staticmethod
    def _not_found(call: _Call, apis: dict | None) -> dict:
        """The error body for an API the runtime does not hold, or for a runtime that does not exist."""
        if apis is None:
            return _runtime_not_found(call.path["runtimeId"])
        return _errors(
            f"API with Id {call.path['apiId']} not found in Runtime with Id {call.path['runtimeId']}"
        )

    # --- heartbeats and metrics --------------------------------------------------------------

    # An unknown (never registered, or deleted) runtime: runtime-metrics.yaml documents only 200, 401 and 500 for the
    # heartbeat operations, and for metrics a 400 whose description is "the user did not send the valid request body".
    # Our reading: a heartbeat names its runtime in the body, so one naming an unknown runtime is an invalid body (400,
    # the document's `errorDetails` shape); metrics name the runtime in the path and their body stays valid, so they
    # get the 404 this fake answers on every other path naming an unknown runtime (no document lists a 404 at all).
    def _record_heartbeats(self, heartbeats: list[dict]) -> Response | None:
        """Records all heartbeats, or none and a 400 if one names an unregistered runtime."""
        with self._lock:
            unknown = [h["runtimeId"] for h in heartbeats if h["runtimeId"] not in self._runtimes]
            if unknown:
                return 400, _errors(*(f"runtimeId: runtime {r} is not registered" for r in unknown))
            received_at = _now_ms()
            self._heartbeats.extend(
                {
                    "runtimeId": h["runtimeId"],
                    "created": h["created"],
                    "active": h.get("active"),
                    "receivedAt": received_at,
                }
                for h in heartbeats
            )
        return None

    def _bulk_heartbeats(self, call: _Call) -> Response:
        return self._record_heartbeats(call.body) or (200, call.body)

    def _heartbeat(self, call: _Call) -> Response:
        return self._record_heartbeats([call.body]) or (200, call.body)

    def _store_metrics(self, call: _Call) -> Response:
        runtime_id = call.path["runtime_id"]
        with self._lock:
            if runtime_id not in self._runtimes:
                return 404, _runtime_not_found(runtime_id)
            self._metrics.append(
                {"runtimeId": runtime_id, "body": call.body, "receivedAt": _now_ms()}
            )
        return 202, None


def _query_mapping(query: str) -> dict:
    """Single values as strings, repeated ones as lists, which is what openapi-core expects."""
    parsed = parse_qs(query, keep_blank_values=True)
    return {name: values[0] if len(values) == 1 else values for name, values in parsed.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--username", default="agent")
    parser.add_argument("--password", default="secret")
    parser.add_argument(
        "--runtime-type", action="append", default=[], help="runtime type to preload (repeatable)"
    )
    parser.add_argument("--page-size-cap", type=int, default=DEFAULT_PAGE_SIZE_CAP, help="0: no cap")
    parser.add_argument(
        "--unknown-api-behaviour", choices=UNKNOWN_API_BEHAVIOURS, default=DEFAULT_UNKNOWN_API_BEHAVIOUR
    )
    parser.add_argument("--tls-dir", type=Path,
                        help="serve HTTPS with a certificate of a throwaway private CA written here (ca.pem)")
    args = parser.parse_args()
    fake = FakeControlPlane(
        args.host,
        args.port,
        args.username,
        args.password,
        args.runtime_type,
        log_requests=True,
        page_size_cap=args.page_size_cap or None,
        unknown_api_behaviour=args.unknown_api_behaviour,
    )
    if args.tls_dir:
        _, certificate, key = private_ca(args.tls_dir, args.host)
        fake.serve_tls(certificate, key)
    fake.serve_until_interrupted("fake APICP")


if __name__ == "__main__":
    main()
