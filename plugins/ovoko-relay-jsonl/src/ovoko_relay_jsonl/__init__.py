"""An ovoko-relay plugin: append each event as one JSON line to a dated file."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ovoko_relay.plugins.base import (
    Event,
    PermanentError,
    Plugin,
    RetryableError,
    Setting,
)

__version__ = "1.0.0"
__all__ = ["JsonLinesPlugin", "file_name"]

_ROTATIONS = {"daily": "%Y-%m-%d", "monthly": "%Y-%m", "never": ""}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class JsonLinesPlugin(Plugin):
    """Append one JSON object per delivery to ``FOLDER/PREFIX-DATE.jsonl``."""

    name = "jsonl"
    settings = {
        "folder": Setting(
            kind="path",
            required=True,
            help="The folder the .jsonl files go to (created if missing).",
        ),
        "prefix": Setting(
            default="ovoko-events",
            help="The start of each file name, before the date.",
        ),
        "rotate": Setting(
            default="daily",
            choices=tuple(_ROTATIONS),
            template=False,
            help="Start a new file every day (default), every month, or never.",
        ),
        "fields": Setting(
            kind="mapping",
            help="Write these fields instead of the whole event (each a template).",
        ),
    }

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        record = settings.get("fields") or event.envelope
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        name = file_name(
            settings.get("prefix") or "ovoko-events",
            settings.get("rotate") or "daily",
            event.timestamp,
        )
        path = os.path.join(os.path.abspath(settings["folder"]), name)

        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            append_line(path, line.encode("utf-8"))
        except PermissionError as exc:
            raise PermanentError(
                f"no permission to write {exc.filename or path}: let the relay's "
                "user write there, or choose another `folder`"
            ) from None
        except OSError as exc:
            raise RetryableError(f"writing {path} failed: {exc.strerror}") from None


def file_name(prefix: str, rotate: str, timestamp: str) -> str:
    """Return the file for an event, dated by the event's own timestamp.

    Dating by the event (not by the clock at delivery) puts a retried or
    replayed event in the same file as the first try would have.
    """
    if "/" in prefix or "\\" in prefix or prefix.startswith("."):
        raise PermanentError(
            f"`prefix` must be a plain file name start, not {prefix!r}"
        )
    pattern = _ROTATIONS[rotate]
    if not pattern:
        return f"{prefix}.jsonl"
    try:
        when = datetime.fromisoformat(timestamp)
    except ValueError:
        when = datetime.now(UTC)
    return f"{prefix}-{when.strftime(pattern)}.jsonl"


def append_line(path: str, data: bytes) -> None:
    """Append ``data`` in one write, safe against other threads and processes."""
    with _lock_for(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def _lock_for(path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())
