"""Log output for the journal: logfmt or JSON on stderr, secrets masked."""

from __future__ import annotations

import atexit
import json
import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Iterable
from typing import TextIO

MASK = "***"
# How long the log writer lets lines gather before one write takes them all.
GATHER_SECONDS = 0.01

# Passwords inside URLs (smtp://user:pw@host) and Slack/Discord-style webhook
# paths are secrets even when the config did not mark them as such.
_URL_PASSWORD = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]+:)[^/\s@'\"]+@"
)
_WEBHOOK_PATH = re.compile(
    r"(?P<head>https?://(?:hooks\.slack\.com/(?:services|workflows|triggers)"
    r"|(?:[a-z]+\.)?discord(?:app)?\.com/api/webhooks))/[^\s'\"]+"
)
_PAIR = re.compile(r"""(\w+)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)""")

_secrets_re: re.Pattern[str] | None = None


_PLAIN_VALUE = re.compile(r"[\w.:@/+\-]+")


def quoted(value: object) -> str:
    """Return a logfmt value: as it is when plain, else quoted, so no text from
    an event can add a field or a line to the log."""
    text = str(value)
    if _PLAIN_VALUE.fullmatch(text) and text.isascii():
        return text
    return json.dumps(text)  # escapes line breaks of every kind


def plural(count: int, noun: str) -> str:
    """Return `1 rule`, `2 rules`: a count with its noun."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret inside ``text`` with ***, longest first."""
    return _mask_with(_secrets_pattern(secrets), text)


def mask_secrets(text: str) -> str:
    """Mask the secrets known to the logging set-up (see :func:`set_secrets`)."""
    return _mask_with(_secrets_re, text)


def set_secrets(secrets: Iterable[str]) -> None:
    """Mask these values in every log record from now on."""
    global _secrets_re
    # A secret may reach the log quoted by repr() or json.dumps(), which
    # escape some characters: mask those spellings too.
    spellings = set()
    for secret in secrets:
        spellings.update({secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]})
    _secrets_re = _secrets_pattern(spellings)


def _secrets_pattern(secrets: Iterable[str]) -> re.Pattern[str] | None:
    """Return one pattern matching any secret, longest first, or None."""
    usable = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, usable))) if usable else None


def _mask_with(pattern: re.Pattern[str] | None, text: str) -> str:
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
        text = _WEBHOOK_PATH.sub(lambda m: m.group("head") + "/" + MASK, text)
    return text


def fields(message: str) -> dict[str, str]:
    """Split a `key=value key='quoted value'` message into its fields."""
    found = {}
    for key, value in _PAIR.findall(message):
        if value[:1] in ("'", '"') and value[-1:] == value[:1]:
            value = value[1:-1].replace("\\" + value[0], value[0])
        found[key] = value
    return found


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = mask_secrets(record.getMessage())
        exc = ""
        if record.exc_info:
            exc = mask_secrets(self.formatException(record.exc_info))
        return self.render(record, message, exc)

    def render(self, record: logging.LogRecord, message: str, exc: str) -> str:
        raise NotImplementedError


class LogfmtFormatter(_MaskingFormatter):
    """Format as `ts=… level=… logger=… msg…`, the message already key=value."""

    def render(self, record: logging.LogRecord, message: str, exc: str) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"ts={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f"logger={record.name} {message}"
        )
        if exc:
            line += " exc=" + json.dumps(exc)
        return line


class JsonFormatter(_MaskingFormatter):
    """Format as one JSON object a line, the message's key=value pairs as fields."""

    def render(self, record: logging.LogRecord, message: str, exc: str) -> str:
        data: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        for key, value in fields(message).items():
            data.setdefault(key, value)
        data["msg"] = message
        if exc:
            data["exc"] = exc
        return json.dumps(data, ensure_ascii=False)


# A record to write, or an event to set once what came before it is written.
_Item = logging.LogRecord | threading.Event


class _WriterHandler(logging.Handler):
    """Hand records to one writer thread, which formats and writes them.

    PERF: a request thread only queues its record; the writer joins the lines
    that arrive together into one write, so threads never queue for stderr.
    """

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(formatter)
        self.records: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._write, name="log", daemon=True)
        self.thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.message = record.getMessage()  # its arguments may change later
        except Exception:  # noqa: BLE001 — a bad log call must not fail its caller
            self.handleError(record)
            return
        record.msg, record.args = record.message, None
        self.records.put(record)

    def flush(self) -> None:
        """Return once every line queued so far is written."""
        if self.thread.is_alive():
            written = threading.Event()
            self.records.put(written)
            written.wait(timeout=5)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        self.records.put(None)
        self.thread.join(timeout=5)
        super().close()

    def _write(self) -> None:
        while (record := self.records.get()) is not None:
            if not isinstance(record, threading.Event):
                time.sleep(GATHER_SECONDS)
            batch: list[_Item] = [record]
            while len(batch) < 256:
                try:
                    more = self.records.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.records.put(None)
                    break
                batch.append(more)
            self._write_batch(batch)

    def _write_batch(self, batch: list[_Item]) -> None:
        lines, waiting = [], []
        for item in batch:
            if isinstance(item, threading.Event):
                waiting.append(item)
                continue
            try:
                lines.append(self.format(item) + "\n")
            except Exception:  # noqa: BLE001 — one bad record must not stop logs
                self.handleError(item)
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr is gone (the journal restarted): nothing to tell
        for event in waiting:
            event.set()


def configure(
    level: str = "INFO", fmt: str = "logfmt", stream: TextIO | None = None
) -> None:
    """Send every log record to stderr (or ``stream``) in the chosen format."""
    handler = _WriterHandler(
        stream or sys.stderr,
        JsonFormatter() if fmt == "json" else LogfmtFormatter(),
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def flush() -> None:
    """Write every queued log line (at exit)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _WriterHandler):
            handler.close()


atexit.register(flush)
