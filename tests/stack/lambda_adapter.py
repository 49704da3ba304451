"""Makes `cargo lambda watch` answer like the AWS Lambda Invoke API (test support, not product).

`cargo lambda watch` differs from Lambda in two ways that matter to Step Functions: it rejects
function ARNs (404), and it answers a function error with HTTP 500 instead of HTTP 200 plus the
`X-Amz-Function-Error` header. The interpreter's Lambda client then sees a transport failure
rather than the function's `errorType`. This proxy accepts ARNs and reshapes error answers, so
`Retry`/`Catch` match on our Rust error types exactly as on AWS.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler

from local_server import LocalServer, send_json

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations$")


def function_name(name_or_arn: str) -> str:
    """`arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]` or a plain name -> name."""
    name = urllib.parse.unquote(name_or_arn)
    if name.startswith("arn:"):
        parts = name.split(":")
        return parts[6] if len(parts) > 6 else name
    return name.split(":")[0]


class LambdaAdapter(LocalServer):
    def __init__(self, watch_url: str, host: str = "127.0.0.1", port: int = 0, timeout: float = 600):
        self.watch_url = watch_url.rstrip("/")
        self.timeout = timeout
        self._serve(host, port)

    def _dispatch(self, request: BaseHTTPRequestHandler) -> None:
        match = INVOKE_PATH.match(request.path.split("?")[0])
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if request.command != "POST" or not match:
            return send_json(request, 404, {"Type": "User", "message": f"unknown path {request.path}"},
                             {"x-amzn-ErrorType": "ResourceNotFoundException"})
        status, payload = self.invoke(function_name(match["function"]), body)
        if status == 200:
            return send_json(request, 200, payload, {"X-Amz-Executed-Version": "$LATEST"})
        if status == 500 and isinstance(payload, dict) and "errorType" in payload:
            return send_json(request, 200, payload,
                             {"X-Amz-Function-Error": "Unhandled", "X-Amz-Executed-Version": "$LATEST"})
        if status == 404:
            return send_json(request, 404, {"Type": "User", "message": f"Function not found: {match['function']}"},
                             {"x-amzn-ErrorType": "ResourceNotFoundException"})
        return send_json(request, 502, {"Type": "Service", "message": f"emulator answered {status}: {payload}"},
                         {"x-amzn-ErrorType": "ServiceException"})

    def invoke(self, function: str, body: bytes):
        request = urllib.request.Request(
            f"{self.watch_url}/2015-03-31/functions/{function}/invocations",
            data=body or b"{}", method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read())


def _json(data: bytes):
    try:
        return json.loads(data or b"null")
    except ValueError:
        return data.decode(errors="replace")
