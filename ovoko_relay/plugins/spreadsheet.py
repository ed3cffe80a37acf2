"""The `spreadsheet` plugin: append one row per delivery to a CSV file."""

from __future__ import annotations

import csv
import fcntl
import io
import os
import threading
from collections.abc import Mapping
from typing import Any

from .base import Event, PermanentError, Plugin, Setting

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def neutralise(cell: str) -> str:
    """Keep a spreadsheet from reading a cell from event data as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _lock_for(path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


class SpreadsheetPlugin(Plugin):
    """Append a row of rendered columns, writing the header row once."""

    name = "spreadsheet"
    settings = {
        "path": Setting(kind="path", required=True, help="The CSV file to append to."),
        "columns": Setting(
            kind="mapping",
            required=True,
            help="Ordered mapping of column header to template.",
        ),
    }

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        path = os.path.abspath(settings["path"])
        columns: Mapping[str, str] = settings["columns"]
        if not columns:
            raise PermanentError("`columns` is empty: there is nothing to write")
        header = list(columns)
        row = [neutralise(str(value)) for value in columns.values()]

        os.makedirs(os.path.dirname(path), exist_ok=True)
        with _lock_for(path), open(path, "a+", newline="", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0, os.SEEK_END)
                buffer = io.StringIO()
                writer = csv.writer(buffer)
                if f.tell() == 0:
                    writer.writerow(header)
                writer.writerow(row)
                f.write(buffer.getvalue())
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
