"""Log output for the journal: logfmt or JSON on stderr, secrets masked."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable

MASK = "***"

_secrets: frozenset[str] = frozenset()


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret inside ``text`` with ***, longest first."""
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def set_secrets(secrets: Iterable[str]) -> None:
    """Mask these values in every log record from now on."""
    global _secrets
    _secrets = frozenset(secrets)


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(self.render(record), _secrets)

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError


class LogfmtFormatter(_MaskingFormatter):
    """Format as `ts=… level=… logger=… msg…`, the message already key=value."""

    def render(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"ts={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f"logger={record.name} {record.getMessage()}"
        )
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(_MaskingFormatter):
    """Format as one JSON object a line, the message's key=value pairs as fields."""

    def render(self, record: logging.LogRecord) -> str:
        data = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "logfmt") -> None:
    """Send every log record to stderr in the chosen format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
