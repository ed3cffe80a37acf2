"""The spreadsheet plugin: CSV and XLSX files written, read back, under contention."""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from conftest import sample
from plugin_peers import event_from

from ovoko_relay.errors import PermanentError
from ovoko_relay.plugins.spreadsheet import SpreadsheetPlugin, neutralise

EVENT = event_from(sample("part-sold"))
COLUMNS = {"Part": "17", "Status": "sold", "Event": EVENT.event_id}


def deliver(path: Path, columns: dict[str, str], **extra: Any) -> None:
    settings = {"path": str(path), "columns": columns, **extra}
    SpreadsheetPlugin(settings, 5.0).deliver(settings, EVENT)


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.reader(f))


def read_xlsx(path: Path, sheet: str | None = None) -> list[list[Any]]:
    workbook = openpyxl.load_workbook(path)
    worksheet = workbook[sheet] if sheet else workbook.worksheets[0]
    return [list(row) for row in worksheet.iter_rows(values_only=True)]


def read(path: Path) -> list[list[Any]]:
    return read_csv(path) if path.suffix == ".csv" else read_xlsx(path)


@pytest.mark.parametrize("name", ["sold.csv", "sold.xlsx"])
def test_header_once_then_rows(tmp_path, name):
    path = tmp_path / "sub" / name
    deliver(path, COLUMNS)
    deliver(path, {**COLUMNS, "Part": "18"})

    assert read(path) == [
        ["Part", "Status", "Event"],
        ["17", "sold", EVENT.event_id],
        ["18", "sold", EVENT.event_id],
    ]


def test_csv_starts_with_a_byte_order_mark_for_excel(tmp_path):
    path = tmp_path / "sold.csv"
    deliver(path, COLUMNS)
    assert path.read_bytes().startswith(b"\xef\xbb\xbfPart,Status,Event\r\n")


@pytest.mark.parametrize("name", ["sold.csv", "sold.xlsx"])
@pytest.mark.parametrize(
    "value", ['=HYPERLINK("http://x")', "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"]
)
def test_formula_like_cells_are_neutralised(tmp_path, name, value):
    path = tmp_path / name
    deliver(path, {"Note": value})
    # XML, inside an XLSX file, stores a carriage return as a line feed.
    expected = "'" + (value.replace("\r", "\n") if name.endswith("xlsx") else value)
    assert read(path)[1] == [expected]


def test_neutralise_leaves_plain_text_alone():
    assert neutralise("Part 17 = sold") == "Part 17 = sold"


@pytest.mark.parametrize("name", ["sold.csv", "sold.xlsx"])
def test_a_changed_header_keeps_old_columns_and_adds_new_ones(tmp_path, name):
    path = tmp_path / name
    deliver(path, {"Part": "17", "Status": "sold"})
    deliver(path, {"Status": "sold", "Price": "120", "Part": "18"})

    rows = read(path)
    assert rows[0] == ["Part", "Status", "Price"]
    assert rows[1][:2] == ["17", "sold"]
    assert rows[1][2:] in ([], [None])  # the old row has no Price cell
    assert rows[2] == ["18", "sold", "120"]


def test_csv_rows_written_by_hand_without_a_final_line_break_stay_apart(tmp_path):
    path = tmp_path / "sold.csv"
    path.write_text("Part,Status\r\n16,sold", encoding="utf-8")
    deliver(path, {"Part": "17", "Status": "sold"})
    assert read_csv(path) == [["Part", "Status"], ["16", "sold"], ["17", "sold"]]


def test_xlsx_named_sheet_is_created_beside_others(tmp_path):
    path = tmp_path / "sold.xlsx"
    deliver(path, COLUMNS)
    deliver(path, COLUMNS, sheet="Sold parts")

    workbook = openpyxl.load_workbook(path)
    assert len(workbook.sheetnames) == 2
    assert read_xlsx(path, "Sold parts") == [
        ["Part", "Status", "Event"],
        ["17", "sold", EVENT.event_id],
    ]


@pytest.mark.parametrize(
    ("name", "extra", "text"),
    [
        ("sold.ods", {}, "must end in .csv or .xlsx"),
        ("sold.xlsx", {"sheet": "a/b"}, "not a valid sheet name"),
    ],
)
def test_settings_that_can_never_work_are_permanent(tmp_path, name, extra, text):
    with pytest.raises(PermanentError, match=text):
        deliver(tmp_path / name, COLUMNS, **extra)


def test_a_file_that_is_not_a_workbook_is_permanent_and_kept(tmp_path):
    path = tmp_path / "sold.xlsx"
    path.write_text("not a zip")
    with pytest.raises(PermanentError, match="cannot be read as an XLSX workbook"):
        deliver(path, COLUMNS)
    assert path.read_text() == "not a zip"


@pytest.mark.parametrize("name", ["sold.csv", "sold.xlsx"])
def test_twenty_concurrent_deliveries_give_twenty_intact_rows(tmp_path, name):
    path = tmp_path / name
    start = threading.Barrier(20)
    failures: list[BaseException] = []

    def one(number: int) -> None:
        start.wait()
        try:
            deliver(path, {"Part": str(number), "Note": "x" * 2000, "Status": "sold"})
        except BaseException as exc:  # noqa: BLE001 — reported by the assert below
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert failures == []
    rows = read(path)
    assert rows[0] == ["Part", "Note", "Status"]
    assert sorted(int(row[0]) for row in rows[1:]) == list(range(20))
    assert all(row[1:] == ["x" * 2000, "sold"] for row in rows[1:])
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["sold.csv", "sold.xlsx"])
def test_two_processes_writing_one_file_take_turns(tmp_path, name):
    path = tmp_path / name
    script = (
        "import sys\n"
        "from ovoko_relay.events import Event\n"
        "from ovoko_relay.plugins.spreadsheet import SpreadsheetPlugin\n"
        "event = Event('e', 't', '2023-01-12T14:17:20+02:00', {}, {})\n"
        "for n in range(10):\n"
        "    s = {'path': sys.argv[1], 'columns': {'Who': sys.argv[2], 'N': str(n)}}\n"
        "    SpreadsheetPlugin(s, 5.0).deliver(s, event)\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(path), who])
        for who in ("a", "b")
    ]
    assert [writer.wait(60) for writer in writers] == [0, 0]

    rows = read(path)
    assert rows[0] == ["Who", "N"]
    assert sorted(rows[1:]) == sorted([w, str(n)] for w in "ab" for n in range(10))
