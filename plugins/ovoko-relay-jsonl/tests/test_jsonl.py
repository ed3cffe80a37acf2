"""Tests for the jsonl plugin: call it the way the relay does, read the file back."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from ovoko_relay.errors import PermanentError
from ovoko_relay.events import Event
from ovoko_relay.plugins import validate

from ovoko_relay_jsonl import JsonLinesPlugin, file_name

ENVELOPE = {
    "event_id": "5d0c8f3e-2b1a-4c7e-9f00-3a9d1b2c4e51",
    "event_type": "part.status.changed",
    "timestamp": "2023-01-12T23:30:00+02:00",
    "event_data": {"part_id": "17", "status": "sold", "external_id": "WH-1002"},
}


def deliver(settings: dict[str, Any], envelope: dict[str, Any] = ENVELOPE) -> None:
    """Build the plugin and deliver once, as a relay worker would."""
    plugin = JsonLinesPlugin(settings, timeout=5.0)
    plugin.deliver(settings, Event.from_envelope(envelope))
    plugin.close()


def test_the_class_passes_the_relays_own_checks():
    assert validate(JsonLinesPlugin, "jsonl") == ""


def test_each_event_is_one_line_in_the_file_of_its_own_day(tmp_path):
    deliver({"folder": str(tmp_path)})
    deliver({"folder": str(tmp_path)}, {**ENVELOPE, "event_id": "second"})

    path = tmp_path / "ovoko-events-2023-01-12.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        ENVELOPE,
        {**ENVELOPE, "event_id": "second"},
    ]


def test_fields_replace_the_whole_event(tmp_path):
    deliver({"folder": str(tmp_path), "fields": {"part": "17", "note": "ünd"}})
    text = (tmp_path / "ovoko-events-2023-01-12.jsonl").read_text(encoding="utf-8")
    assert json.loads(text) == {"part": "17", "note": "ünd"}


@pytest.mark.parametrize(
    ("prefix", "rotate", "expected"),
    [
        ("ovoko-events", "daily", "ovoko-events-2023-01-12.jsonl"),
        ("sales", "monthly", "sales-2023-01.jsonl"),
        ("sales", "never", "sales.jsonl"),
    ],
)
def test_file_names(prefix, rotate, expected):
    assert file_name(prefix, rotate, ENVELOPE["timestamp"]) == expected


@pytest.mark.parametrize("prefix", ["../outside", "a/b", ".hidden"])
def test_a_prefix_cannot_leave_the_folder(tmp_path, prefix):
    with pytest.raises(PermanentError, match="`prefix` must be a plain file name"):
        deliver({"folder": str(tmp_path), "prefix": prefix})


def test_concurrent_deliveries_never_mix_lines(tmp_path):
    def one(number: int) -> None:
        deliver(
            {"folder": str(tmp_path), "fields": {"n": str(number), "pad": "x" * 5000}}
        )

    threads = [threading.Thread(target=one, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    lines = (tmp_path / "ovoko-events-2023-01-12.jsonl").read_text().splitlines()
    assert sorted(int(json.loads(line)["n"]) for line in lines) == list(range(20))
