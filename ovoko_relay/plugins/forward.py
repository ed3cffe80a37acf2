"""The `http` plugin: forward the event, or a rendered body, to the seller's system."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from . import _http
from .base import Event, PermanentError, Plugin, Setting

DEFAULT_SIGNATURE_HEADER = "X-Ovoko-Relay-Signature"
METHODS = ("POST", "PUT", "PATCH", "GET", "DELETE")
_BODYLESS = ("GET", "DELETE")


class HttpPlugin(Plugin):
    """Send one HTTP request per delivery; a 2xx answer means delivered."""

    name = "http"
    settings = {
        "url": Setting(required=True, help="The address to send the request to."),
        "method": Setting(
            default="POST",
            choices=METHODS,
            template=False,
            help="The HTTP method: POST (default), PUT, PATCH, GET or DELETE.",
        ),
        "headers": Setting(kind="mapping", help="Extra request headers."),
        "body": Setting(
            kind="any",
            help="The request body: text, or a YAML mapping sent as JSON; without "
            "it, the event's JSON as Ovoko sent it.",
        ),
        "signing_secret": Setting(
            secret=True,
            help="Sign the body with HMAC-SHA256 using this secret.",
        ),
        "signature_header": Setting(
            default=DEFAULT_SIGNATURE_HEADER,
            help="The header that carries the signature.",
        ),
    }

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        method = (settings.get("method") or "POST").upper()
        url = settings["url"]
        body, content_type = request_body(settings, event, method)
        headers = {"X-Ovoko-Event-Id": event.event_id}
        if content_type:
            headers["Content-Type"] = content_type
        headers.update(_header_values(settings.get("headers") or {}))
        secret = settings.get("signing_secret")
        if secret:
            header = settings.get("signature_header") or DEFAULT_SIGNATURE_HEADER
            headers[header] = signature(secret, body or b"")
        _http.request(method, url, body, headers, self.timeout, _who(url))


def request_body(
    settings: Mapping[str, Any], event: Event, method: str
) -> tuple[bytes | None, str]:
    """Return the body bytes and their content type for this request."""
    text = settings.get("body")
    if text in (None, "", [], {}):
        if method in _BODYLESS:
            return None, ""
        # The event as Ovoko sent it, byte for byte when the relay has it.
        text = event.body or json.dumps(
            event.envelope, ensure_ascii=False, separators=(",", ":")
        )
        return text.encode("utf-8"), "application/json"
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False)
        return text.encode("utf-8"), "application/json"
    try:
        json.loads(text)
    except ValueError:
        return text.encode("utf-8"), "text/plain; charset=utf-8"
    return text.encode("utf-8"), "application/json"


def signature(secret: str, body: bytes) -> str:
    """Return ``sha256=<hex>``, the HMAC-SHA256 of exactly these body bytes."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _header_values(headers: Mapping[str, Any]) -> dict[str, str]:
    checked = {}
    for name, value in headers.items():
        if isinstance(value, (dict, list)):
            raise PermanentError(f"header `{name}` must be a single value")
        text = str(value)
        if "\n" in text or "\r" in text:
            raise PermanentError(
                f"header `{name}` would contain a line break; a header is one line"
            )
        checked[str(name)] = text
    return checked


def _who(url: str) -> str:
    # Name the receiver by host only: a path or query may carry a token.
    try:
        host = urllib.parse.urlsplit(url.strip()).netloc.rpartition("@")[2]
    except ValueError:
        host = ""
    return f"the forward target {host}" if host else "the forward target"
