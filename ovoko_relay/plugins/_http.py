"""One HTTP request for the plugins that post to a URL, its outcome classified."""

from __future__ import annotations

import email.utils
import http.client
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from .. import __version__
from .base import PermanentError, RetryableError

USER_AGENT = f"ovoko-relay/{__version__}"
_SNIPPET = 200


@dataclass(frozen=True)
class Response:
    """What a receiver answered with a 2xx status."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def check_url(url: str, what: str) -> urllib.parse.SplitResult:
    """Return the parts of an http(s) URL, or raise PermanentError naming ``what``."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        parts.port  # noqa: B018 — reading it raises ValueError for a bad port
    except ValueError:
        raise PermanentError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"{what} must be a URL starting with https:// or http://")
    return parts


def request(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    timeout: float,
    what: str,
) -> Response:
    """Send one request; return a 2xx answer or raise a classified delivery error.

    ``what`` names the receiver in every message ("the Slack webhook"), so a
    URL that holds a secret never appears in an error.
    """
    parts = check_url(url, what)
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "",
            parts.port,
            timeout=timeout,
            context=ssl.create_default_context(),
        )
    else:
        connection = http.client.HTTPConnection(
            parts.hostname or "", parts.port, timeout=timeout
        )
    all_headers = {"User-Agent": USER_AGENT, **headers}
    try:
        connection.request(method, target, body=body, headers=all_headers)
        answer = connection.getresponse()
        data = answer.read()
    except TimeoutError:
        raise RetryableError(f"{what} did not answer within {timeout:g}s") from None
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(
            f"{what} presented a TLS certificate that is not trusted "
            f"({exc.verify_message})"
        ) from None
    except ValueError as exc:
        raise PermanentError(f"{what} cannot be called: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise RetryableError(f"{what} could not be reached: {_reason(exc)}") from None
    finally:
        connection.close()

    answered = {k.lower(): v for k, v in answer.getheaders()}
    if 200 <= answer.status < 300:
        return Response(answer.status, answered, data)
    raise classify(answer.status, answered, data, what)


def classify(
    status: int, headers: Mapping[str, str], body: bytes, what: str
) -> RetryableError | PermanentError:
    """Turn a non-2xx answer into the error that says whether to try again."""
    message = f"{what} answered {status}{_snippet(body)}"
    if status == 429 or status == 408 or status >= 500:
        return RetryableError(message, retry_after=retry_after(headers))
    if 300 <= status < 400:
        return PermanentError(
            f"{message}: it redirects elsewhere; configure the address it redirects to"
        )
    return PermanentError(message)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Read a Retry-After header (seconds or an HTTP date) as seconds from now."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _snippet(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    if not text:
        return ""
    if len(text) > _SNIPPET:
        text = text[:_SNIPPET] + "…"
    return f": {text}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "its host name could not be resolved"
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused"
    return str(exc) or type(exc).__name__
