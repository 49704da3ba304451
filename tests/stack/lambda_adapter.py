"""Makes `cargo lambda watch` answer like the AWS Lambda Invoke API (test support, not product).

`cargo lambda watch` differs from Lambda in ways that matter to Step Functions: it rejects
function ARNs (404), it answers a function error with HTTP 500 instead of HTTP 200 plus the
`X-Amz-Function-Error` header, and it enforces neither the functions' timeouts nor the payload
quotas. The interpreter's Lambda client would then see a transport failure rather than the
function's `errorType`, or a result AWS never returns. This proxy accepts ARNs, reshapes error
answers and enforces those limits, so `Retry`/`Catch` match on our Rust error types exactly as on AWS.

A function that outlives its timeout is cut off, as Lambda stops it and resets its execution
environment: `on_timeout(watch_url)` (the stack's restart of the emulator, which stops every
instance; the emulator cannot stop one) must return the emulator's URL to use from then on.
Without it, the emulator's instance would go on working after the `Sandbox.Timedout` answer,
which no real Lambda does.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable

from local_server import LocalServer, send_json

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")
# Each function's binary and timeout, as the CDK deploys them.
FUNCTIONS_FILE = Path(__file__).resolve().parents[2] / "statemachine" / "functions.json"
# Lambda's maximum timeout, for functions the file does not list.
DEFAULT_TIMEOUT_SECONDS = 900
# Synchronous invocations carry at most 6 MB each way; the byte figures are the ones Lambda's errors
# state: "Request must be smaller than 6291456 bytes for the InvokeFunction operation" and "Response
# payload size exceeded maximum allowed payload size (6291556 bytes)."
MAX_REQUEST_BYTES = 6_291_456
MAX_RESPONSE_BYTES = 6_291_556


def function_name(name_or_arn: str) -> str:
    """`arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]` or a plain name -> name."""
    name = urllib.parse.unquote(name_or_arn)
    if name.startswith("arn:"):
        parts = name.split(":")
        return parts[6] if len(parts) > 6 else name
    return name.split(":")[0]


def load_timeouts(path: Path = FUNCTIONS_FILE) -> dict[str, float]:
    """Each function's timeout in seconds, by its binary's name."""
    functions = json.loads(path.read_text())
    return {spec["binary"]: spec["timeoutSeconds"] for key, spec in functions.items() if not key.startswith("_")}


class LambdaAdapter(LocalServer):
    def __init__(self, watch_url: str, host: str = "127.0.0.1", port: int = 0,
                 timeouts: dict[str, float] | None = None, on_timeout: Callable[[str], str] | None = None):
        self.watch_url = watch_url.rstrip("/")
        self.timeouts = load_timeouts() if timeouts is None else timeouts
        self.on_timeout = on_timeout
        self._emulator_ready = threading.Event()  # cleared while on_timeout restarts the emulator
        self._emulator_ready.set()
        self._serve(host, port)

    def _dispatch(self, request: BaseHTTPRequestHandler) -> None:
        match = INVOKE_PATH.match(request.path.split("?")[0])
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if request.command != "POST" or not match:
            return send_json(request, 404, {"Type": "User", "message": f"unknown path {request.path}"},
                             {"x-amzn-ErrorType": "ResourceNotFoundException"})
        if len(body) >= MAX_REQUEST_BYTES:
            message = f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction operation"
            return send_json(request, 413, {"Type": "User", "message": message},
                             {"x-amzn-ErrorType": "RequestEntityTooLargeException"})
        function = function_name(match["function"])
        timeout = self.timeouts.get(function, DEFAULT_TIMEOUT_SECONDS)
        self._emulator_ready.wait()
        watch_url = self.watch_url
        answer = self.invoke(function, body, timeout, watch_url)
        if answer is None:
            if self.on_timeout:
                self._emulator_ready.clear()
                try:
                    self.watch_url = self.on_timeout(watch_url).rstrip("/")
                finally:
                    self._emulator_ready.set()
            return send_function_error(request, {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {uuid.uuid4()} Error: Task timed out after {timeout:.2f} seconds"})
        status, data = answer
        if status in (200, 500) and len(data) > MAX_RESPONSE_BYTES:
            message = f"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
            return send_function_error(request, {"errorType": "Function.ResponseSizeTooLarge", "errorMessage": message})
        payload = _json(data)
        if status == 200:
            return send_json(request, 200, payload, {"X-Amz-Executed-Version": "$LATEST"})
        if status == 500 and isinstance(payload, dict) and "errorType" in payload:
            return send_function_error(request, payload)
        if status == 404:
            return send_json(request, 404, {"Type": "User", "message": f"Function not found: {match['function']}"},
                             {"x-amzn-ErrorType": "ResourceNotFoundException"})
        return send_json(request, 502, {"Type": "Service", "message": f"emulator answered {status}: {payload}"},
                         {"x-amzn-ErrorType": "ServiceException"})

    def invoke(self, function: str, body: bytes, timeout: float, watch_url: str) -> tuple[int, bytes] | None:
        """The emulator's status and body, or None when the function did not answer within `timeout` seconds."""
        request = urllib.request.Request(
            f"{watch_url}/2015-03-31/functions/{function}/invocations",
            data=body or b"{}", method="POST", headers={"Content-Type": "application/json"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, data = error.code, error.read()
        except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
            if isinstance(getattr(error, "reason", error), TimeoutError):
                return None
            # The emulator dropped the invocation (restarted after another function's timeout):
            # answered as Lambda answers a failure of its own, which Retry matches.
            status, data = 502, json.dumps(f"the emulator dropped the invocation: {error}").encode()
        # The socket timeout bounds each read, not the whole answer.
        return None if time.monotonic() - started > timeout else (status, data)


def send_function_error(request: BaseHTTPRequestHandler, payload: dict) -> None:
    """Lambda's answer to a function that failed: HTTP 200, the error in the body and a header."""
    send_json(request, 200, payload, {"X-Amz-Function-Error": "Unhandled", "X-Amz-Executed-Version": "$LATEST"})


def _json(data: bytes):
    try:
        return json.loads(data or b"null")
    except ValueError:
        return data.decode(errors="replace")
