"""Crash safety: kill -9 right after a 2xx loses nothing, and the rules still run."""

from __future__ import annotations

import csv
import shutil
import sqlite3
from contextlib import closing

from conftest import ROOT, sample, wait_until

CSV_CONFIG = """
    auth:
      tokens: ["${OVOKO_TOKEN}"]
    storage:
      path: ./data/relay.sqlite3
    actions:
      sheet:
        plugin: spreadsheet
        path: ./data/sold.csv
    rules:
      - name: Part sold
        when:
          status: sold
        do:
          - action: sheet
            columns:
              Event: "{{ event.event_id }}"
              Part: "{{ data.part_id }}"
"""


def sold_events(count: int) -> list[dict]:
    events = []
    for number in range(count):
        event = sample("part-sold")
        event["event_id"] = f"11111111-0000-4000-8000-{number:012d}"
        event["event_data"]["part_id"] = str(1000 + number)
        events.append(event)
    return events


def csv_rows(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def test_kill_9_right_after_the_answer_keeps_every_event_and_runs_its_rule(
    write_config, start_relay
):
    config = write_config(CSV_CONFIG)
    relay = start_relay(config)
    events = sold_events(20)

    answers = [relay.post(event) for event in events]
    relay.kill9()

    assert [a.status_code for a in answers] == [200] * 20
    db = config.parent / "data" / "relay.sqlite3"
    with closing(sqlite3.connect(db)) as conn:
        kept = {row[0] for row in conn.execute("SELECT event_id FROM events")}
    assert kept == {e["event_id"] for e in events}

    restarted = start_relay(config)
    sheet = config.parent / "data" / "sold.csv"

    def all_rows_written() -> bool:
        return sheet.exists() and {r.get("Event") for r in csv_rows(sheet)} >= kept

    wait_until(all_rows_written, timeout=15)
    assert restarted.stop() == 0
    assert {r["Event"] for r in csv_rows(sheet)} == kept


def test_the_example_config_turns_the_seed_curl_into_a_csv_row(tmp_path, start_relay):
    config = tmp_path / "config.yaml"
    shutil.copy(ROOT / "config.example.yaml", config)
    relay = start_relay(config)

    answer = relay.post(sample("seed-example"))

    assert answer.status_code == 200
    relay.wait_for_log(r"plugin=spreadsheet attempt=1 outcome=done")
    with open(tmp_path / "data" / "sold-parts.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 2  # the header, written once, and the event's row
    assert "15" in rows[1]
    assert "sold" in rows[1]
    assert "101aa6a1-ed22-42f0-84ca-1f8a028a2d28" in rows[1]
    assert "Part 15" in relay.log()
