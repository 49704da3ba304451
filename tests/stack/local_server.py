"""The lifecycle shared by the local stand-ins: an HTTP server on loopback, in a daemon thread."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from pathlib import Path
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
        self._scheme = "http"

    def serve_tls(self, certificate: Path, key: Path) -> None:
        """Serves HTTPS with `certificate` (PEM chain) and `key` instead of plain HTTP; call before start()."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certificate, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https"

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

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


def private_ca(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throwaway private CA and a server certificate it signed for `host` (and localhost), as a company's own CA
    would issue for an on-premises control plane: (ca.pem, server.pem, server-key.pem) in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(minutes=5), "not_valid_after": now + datetime.timedelta(days=2)}

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder(subject_name=name("Local test CA"), issuer_name=name("Local test CA"),
                                  public_key=ca_key.public_key(), serial_number=x509.random_serial_number(), **valid)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    server = (x509.CertificateBuilder(subject_name=name(host), issuer_name=ca.subject,
                                      public_key=server_key.public_key(), serial_number=x509.random_serial_number(),
                                      **valid)
              .add_extension(x509.SubjectAlternativeName(names), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths
