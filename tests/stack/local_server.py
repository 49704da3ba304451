"""The lifecycle shared by the local stand-ins: an HTTP server on loopback, in a daemon thread."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def send_json(request: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
    """Answers `payload` as JSON; `None` answers an empty body."""
    data = b"" if payload is None else json.dumps(payload).encode()
    request.send_response(status)
    if payload is not None:
        request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(data)


class LocalServer:
    """Serves on `host:port` (port 0 picks a free one), handing every request to the subclass's
    `_dispatch(request)`; usable as a context manager."""

    def _dispatch(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def _serve(self, host: str, port: int, log_requests: bool = False) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the AWS SDKs and reqwest expect
            # Headers and body go out in separate writes; without this, Nagle and delayed ACKs
            # add ~40 ms to every keep-alive request.
            disable_nagle_algorithm = True

            def do_GET(self):
                server._dispatch(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, format, *args):
                if log_requests:
                    super().log_message(format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        # A short poll interval makes stop() return promptly instead of after up to 0.5 s.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def serve_until_interrupted(self, label: str) -> None:
        """The command-line mode: serve in the foreground until Ctrl-C."""
        print(f"{label} listening on {self.url}", flush=True)
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
