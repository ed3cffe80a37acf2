"""Real peers on loopback for plugin tests: an HTTP receiver and an SMTP server."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from ovoko_relay.events import Event


def event_from(envelope: dict[str, Any]) -> Event:
    """Build an Event the way the store hands it to a plugin."""
    return Event.from_envelope(json.loads(json.dumps(envelope)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server that records requests and answers from a script."""

    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    default: tuple[int, dict[str, str], bytes] = (200, {}, b"ok")
    delay: float = 0.0
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        """Queue one answer; once the queue is empty, the default is used."""
        self.answers.append(
            (status, {k.replace("_", "-"): v for k, v in headers.items()}, body)
        )

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[Request]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
        assert len(self.requests) >= count, f"got {len(self.requests)} of {count}"
        return self.requests


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if receiver.delay:
                time.sleep(receiver.delay)
            status, headers, answer = (
                receiver.answers.pop(0) if receiver.answers else receiver.default
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
            with receiver.arrived:
                receiver.requests.append(
                    Request(self.command, self.path, dict(self.headers), body)
                )
                receiver.arrived.notify_all()

        do_POST = do_PUT = do_PATCH = do_GET = do_DELETE = _any

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left is what some tests want


def start_receiver() -> Iterator[Receiver]:
    server = _Server(("127.0.0.1", 0), BaseHTTPRequestHandler)
    receiver = Receiver(server)
    server.RequestHandlerClass = _handler(receiver)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Mailbox:
    """What an SMTP server on loopback received."""

    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)
        assert len(self.messages) >= count, f"got {len(self.messages)} of {count}"
        return self.messages


class _Handler:
    def __init__(self, mailbox: Mailbox, refuse: dict[str, str]) -> None:
        self.mailbox = mailbox
        self.refuse = refuse

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: ANN001, N802
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self.mailbox.arrived:
            self.mailbox.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.mailbox.messages.append(message)
            self.mailbox.arrived.notify_all()
        return "250 Message accepted"


def _authenticator(username: str, password: str):  # noqa: ANN202
    def check(server, session, envelope, mechanism, auth_data):  # noqa: ANN001
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == username
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    return check


def start_smtp(
    tls_context: ssl.SSLContext | None = None,
    login: tuple[str, str] | None = None,
    refuse: dict[str, str] | None = None,
    implicit_tls: bool = False,
) -> Iterator[Mailbox]:
    """Run an SMTP server; ``tls_context`` offers STARTTLS, or TLS from the start."""
    mailbox = Mailbox("127.0.0.1", free_port())
    options: dict[str, Any] = {}
    if tls_context is not None:
        options["ssl_context" if implicit_tls else "tls_context"] = tls_context
    if login is not None:
        options["authenticator"] = _authenticator(*login)
        options["auth_require_tls"] = False
    controller = Controller(
        _Handler(mailbox, refuse or {}),
        hostname=mailbox.host,
        port=mailbox.port,
        server_hostname="127.0.0.1",
        **options,
    )
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """Write a certificate and key for 127.0.0.1; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def wait_until(check: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (FileNotFoundError, ValueError, KeyError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g}s")
        time.sleep(0.05)
