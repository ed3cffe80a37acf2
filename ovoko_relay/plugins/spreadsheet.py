"""The `spreadsheet` plugin: append one row per delivery to a CSV or XLSX file."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import logging
import os
import re
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

from .base import Event, PermanentError, Plugin, RetryableError, Setting

log = logging.getLogger(__name__)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SHEET_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def neutralise(cell: str) -> str:
    """Keep a spreadsheet from reading a cell from event data as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


class SpreadsheetPlugin(Plugin):
    """Append a row of rendered columns, writing the header row once.

    When the file's header differs from ``columns``, the row goes under the
    matching headers by name; a configured column the file lacks is added at
    the right end of the header. Nothing already in the file is moved or lost.
    """

    name = "spreadsheet"
    settings = {
        "path": Setting(
            kind="path",
            required=True,
            help="The .csv or .xlsx file to append to (created if missing).",
        ),
        "columns": Setting(
            kind="mapping",
            required=True,
            help="Ordered mapping of column header to template.",
        ),
        "sheet": Setting(
            help="The sheet of an .xlsx file to append to (default: the first)."
        ),
    }

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        path = os.path.abspath(settings["path"])
        columns: Mapping[str, Any] = settings["columns"]
        if not columns:
            raise PermanentError("`columns` is empty: there is nothing to write")
        row = {str(k): neutralise(str(v)) for k, v in columns.items()}
        kind = os.path.splitext(path)[1].lower()
        if kind not in (".csv", ".xlsx"):
            raise PermanentError(
                f"`path` must end in .csv or .xlsx, not {kind or 'nothing'!r} "
                f"({os.path.basename(path)})"
            )

        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with locked(path):
                if kind == ".csv":
                    append_csv(path, row)
                else:
                    append_xlsx(path, row, settings.get("sheet") or "")
        except PermissionError as exc:
            raise PermanentError(
                f"no permission to write {exc.filename or path}: let the relay's "
                "user write there, or choose another `path`"
            ) from None
        except OSError as exc:
            raise RetryableError(f"writing {path} failed: {exc.strerror}") from None


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold this file against other threads and, via a side file, other processes."""
    with _lock_for(path):
        folder, name = os.path.split(path)
        with open(os.path.join(folder, f".{name}.lock"), "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def merge_header(path: str, existing: list[str], columns: list[str]) -> list[str]:
    """Return the header to use: the file's, plus configured columns it lacks."""
    if not existing:
        return columns
    added = [c for c in columns if c not in existing]
    if added:
        log.warning(
            "file=%s outcome=columns_added columns=%r reason=%r",
            path,
            added,
            "the rule has columns the file's header lacks",
        )
    return existing + added


def append_csv(path: str, row: Mapping[str, str]) -> None:
    """Append ``row`` under the CSV file's header, writing or widening it first."""
    existing = _csv_header(path)
    header = merge_header(path, existing, list(row))
    if existing and header != existing:
        _rewrite_csv_header(path, header)

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if existing and not _ends_with_newline(path):
        buffer.write("\r\n")  # someone saved the file without a final line break
    if not existing:
        buffer.write("\ufeff")  # Excel reads a CSV as UTF-8 only with this mark.
        writer.writerow(header)
    writer.writerow([row.get(name, "") for name in header])
    with open(path, "a", newline="", encoding="utf-8") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())


def append_xlsx(path: str, row: Mapping[str, str], sheet: str) -> None:
    """Append ``row`` to a sheet of an XLSX workbook, replacing the file atomically."""
    import openpyxl
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if sheet and (len(sheet) > 31 or _SHEET_FORBIDDEN.search(sheet)):
        raise PermanentError(
            f"`sheet` {sheet!r} is not a valid sheet name: at most 31 characters, "
            "none of [ ] : * ? / \\"
        )
    # TODO: each row loads and saves the whole workbook; past tens of thousands
    # of rows an append takes seconds (CSV has no such cost).
    if os.path.exists(path) and os.path.getsize(path) > 0:
        try:
            workbook = openpyxl.load_workbook(path)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise PermanentError(
                f"{path} cannot be read as an XLSX workbook ({exc}); move it away "
                "and the relay will start a new one"
            ) from None
    else:
        workbook = openpyxl.Workbook()
        if sheet:
            workbook.active.title = sheet
    if sheet and sheet not in workbook.sheetnames:
        workbook.create_sheet(sheet)
    worksheet = workbook[sheet] if sheet else workbook.worksheets[0]

    is_empty = worksheet.max_row == 1 and worksheet.cell(1, 1).value is None
    existing = [] if is_empty else _xlsx_header(worksheet)
    header = merge_header(path, existing, list(row))
    for number, name in enumerate(header, start=1):
        worksheet.cell(1, number, name)
    clean = [ILLEGAL_CHARACTERS_RE.sub("", row.get(name, "")) for name in header]
    worksheet.append(clean)
    _replace(path, workbook.save, text=False)


def _lock_for(path: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def _csv_header(path: str) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    except FileNotFoundError:
        return []


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) in (b"\n", b"\r")


def _rewrite_csv_header(path: str, header: list[str]) -> None:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    rows[0] = header

    def write(target: io.TextIOWrapper) -> None:
        target.write("\ufeff")
        csv.writer(target).writerows(rows)

    _replace(path, write, text=True)


def _xlsx_header(worksheet: Any) -> list[str]:
    cells = next(worksheet.iter_rows(min_row=1, max_row=1, values_only=True), ())
    header = ["" if value is None else str(value) for value in cells]
    while header and header[-1] == "":
        header.pop()
    return header


def _replace(path: str, write: Any, text: bool) -> None:
    """Write a sibling temp file, fsync it, and rename it over ``path``."""
    folder, name = os.path.split(path)
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        f: IO[Any] = (
            os.fdopen(fd, "w", newline="", encoding="utf-8")
            if text
            else os.fdopen(fd, "wb")
        )
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            os.chmod(temp, os.stat(path).st_mode & 0o7777)
        else:
            os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
