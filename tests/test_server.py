"""The running relay: reload without a refused request, graceful stop, health."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import TOKEN, sample, wait_until

SHEET_CONFIG = """\
auth: {{tokens: ["${{OVOKO_TOKEN}}"]}}
storage: {{path: ./data/relay.sqlite3}}
actions:
  {action}:
    plugin: spreadsheet
    path: ./{sheet}.csv
rules:
  - name: Every event
    when: {{event_type: part.status.changed}}
    do:
      - action: {action}
        columns: {{Event: "{{{{ event.event_id }}}}"}}
"""
OLD = SHEET_CONFIG.format(action="sheet-a", sheet="sheet-a")
# The same action writing elsewhere: deliveries chosen before a reload run
# with the settings of the config in force when they are attempted.
NEW = SHEET_CONFIG.format(action="sheet-a", sheet="sheet-b")


def event(n: int) -> dict[str, Any]:
    body = sample("part-sold")
    body["event_id"] = str(uuid.UUID(int=n + 1))
    return body


def rows(path: Path) -> list[str]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [row["Event"] for row in csv.DictReader(f)]


def replace_config(path: Path, text: str, how: str) -> None:
    """Change the config the way an editor or a deploy tool would."""
    if how == "in_place":
        with open(path, "r+") as f:
            f.truncate(0)
            f.write(text)
    elif how == "rename":
        temporary = path.with_name(".config.yaml.swp")
        temporary.write_text(text)
        os.replace(temporary, path)
    elif how == "symlink":
        target = path.parent / "versions" / f"{uuid.uuid4()}.yaml"
        target.write_text(text)
        link = path.with_name(".config.yaml.new")
        link.symlink_to(target)
        os.replace(link, path)


def write_first(tmp_path: Path, text: str, how: str) -> Path:
    path = tmp_path / "config.yaml"
    if how == "symlink":
        (tmp_path / "versions").mkdir()
        first = tmp_path / "versions" / "first.yaml"
        first.write_text(text)
        path.symlink_to(first)
    else:
        path.write_text(text)
    return path


class Poster(threading.Thread):
    """Post distinct events in a loop, noting which were sent after the reload."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url + "/webhooks/ovoko"
        self.reloaded = threading.Event()
        self.done = threading.Event()
        self.answers: list[tuple[str, int, bool]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        session = requests.Session()
        headers = {"X-Ovoko-Token": TOKEN, "Content-Type": "application/json"}
        for n in range(400):
            if self.done.is_set():
                break
            after_reload = self.reloaded.is_set()
            body = event(n)
            try:
                response = session.post(
                    self.url, data=json.dumps(body), headers=headers, timeout=10
                )
                self.answers.append(
                    (body["event_id"], response.status_code, after_reload)
                )
            except requests.RequestException as exc:
                self.errors.append(repr(exc))
            time.sleep(0.005)
        session.close()

    def count_after_reload(self) -> int:
        return sum(1 for _, _, after in self.answers if after)


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["in_place", "rename", "symlink"])
def test_sighup_under_load_refuses_nothing_and_applies_the_new_rule(
    tmp_path: Path, start_relay, how: str
) -> None:
    path = write_first(tmp_path, OLD, how)
    relay = start_relay(path)
    poster = Poster(relay.url)
    poster.start()
    wait_until(lambda: len(poster.answers) >= 20)

    replace_config(path, NEW, how)
    relay.signal(signal.SIGHUP)
    relay.wait_for_log("reload outcome=applied")
    poster.reloaded.set()
    wait_until(lambda: poster.count_after_reload() >= 20)
    poster.done.set()
    poster.join(15)

    assert poster.errors == []
    assert {status for _, status, _ in poster.answers} == {200}
    sent = [event_id for event_id, _, _ in poster.answers]
    wait_until(
        lambda: (
            len(rows(tmp_path / "sheet-a.csv")) + len(rows(tmp_path / "sheet-b.csv"))
            >= len(sent)
        ),
        timeout=20,
    )
    old, new = rows(tmp_path / "sheet-a.csv"), rows(tmp_path / "sheet-b.csv")
    assert sorted(old + new) == sorted(sent)  # each event delivered exactly once
    assert old, "events before the reload ran the old rule"
    after = {event_id for event_id, _, later in poster.answers if later}
    assert after <= set(new)
    assert relay.stop() == 0


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(url, timeout=5)
    return response.status_code, response.json()


def metric(url: str, line_start: str) -> float:
    text = requests.get(url + "/metrics", timeout=5).text
    (line,) = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(line.split()[-1])


@pytest.mark.e2e
def test_invalid_config_on_sighup_keeps_the_old_one_and_says_so(
    tmp_path: Path, start_relay
) -> None:
    path = write_first(tmp_path, OLD, "rename")
    relay = start_relay(path)
    assert relay.post(event(1)).status_code == 200
    wait_until(lambda: rows(tmp_path / "sheet-a.csv"))

    broken = NEW.replace("- action: sheet-a", "- action: sheet-c")
    replace_config(path, broken, "rename")
    before = time.time()
    relay.signal(signal.SIGHUP)
    log = relay.wait_for_log("reload outcome=kept_running_config")

    assert re.search(r"problem='\S+config.yaml:11:\d+: unknown action `sheet-c`", log)
    status, health = get_json(relay.url + "/healthz")
    assert status == 200  # a stale config still keeps every event
    assert health["config"] == "stale"
    since = time.mktime(
        time.strptime(health["config_stale_since"], "%Y-%m-%dT%H:%M:%SZ")
    )
    assert before - 2 <= since - time.timezone <= time.time() + 1
    assert health["config_problems"] == 1
    assert "sheet-c" not in json.dumps(health)  # the problems are in the log only
    assert metric(relay.url, "ovoko_relay_config_last_reload_success") == 0
    assert (
        metric(relay.url, 'ovoko_relay_config_reloads_total{outcome="rejected"}') == 1
    )

    assert relay.post(event(2)).status_code == 200
    wait_until(lambda: len(rows(tmp_path / "sheet-a.csv")) == 2)
    assert not (tmp_path / "sheet-b.csv").exists()

    replace_config(path, NEW, "rename")
    relay.signal(signal.SIGHUP)
    relay.wait_for_log("reload outcome=applied")
    status, health = get_json(relay.url + "/healthz")
    assert (status, health["config"]) == (200, "current")
    assert "config_stale_since" not in health
    assert metric(relay.url, "ovoko_relay_config_last_reload_success") == 1
    assert metric(relay.url, 'ovoko_relay_config_reloads_total{outcome="applied"}') == 1
    assert relay.stop() == 0


class SlowReceiver:
    """A loopback HTTP receiver that takes its time and counts each event."""

    def __init__(self, delay: float) -> None:
        self.started: list[str] = []
        self.finished: Counter[str] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 — the name http.server calls
                self.rfile.read(int(self.headers["Content-Length"]))
                event_id = self.headers["X-Ovoko-Event-Id"]
                receiver.started.append(event_id)
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.finished[event_id] += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/orders"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def statuses(database: Path) -> Counter[str]:
    """Count deliveries by status, and events whose rules have not run yet."""
    conn = sqlite3.connect(database)
    try:
        found = Counter(row[0] for row in conn.execute("SELECT status FROM deliveries"))
        waiting = conn.execute(
            "SELECT count(*) FROM events WHERE processed_at IS NULL"
        ).fetchone()[0]
        if waiting:
            found["not yet dispatched"] = waiting
        return found
    finally:
        conn.close()


@pytest.mark.e2e
def test_sigterm_during_slow_deliveries_exits_0_and_loses_nothing(
    write_config, start_relay, tmp_path: Path
) -> None:
    receiver = SlowReceiver(delay=1.0)
    try:
        path = write_config(
            f"""\
            auth: {{tokens: ["${{OVOKO_TOKEN}}"]}}
            storage: {{path: ./data/relay.sqlite3}}
            delivery: {{workers: 2, grace_period: 8s}}
            actions:
              orders: {{plugin: http, url: "{receiver.url}"}}
            rules:
              - name: Forward
                when: {{event_type: part.status.changed}}
                do:
                  - action: orders
            """
        )
        relay = start_relay(path)
        sent = [event(n)["event_id"] for n in range(8)]
        for n in range(8):
            assert relay.post(event(n)).status_code == 200
        wait_until(lambda: receiver.started)

        relay.signal(signal.SIGTERM)
        assert relay.proc is not None
        assert relay.proc.wait(20) == 0
        relay.stop()

        at_stop = statuses(tmp_path / "data" / "relay.sqlite3")
        assert at_stop["claimed"] == 0
        assert at_stop["done"] == sum(receiver.finished.values())
        assert at_stop["done"] < 8, "the stop waited for every delivery"
        assert at_stop["done"] + at_stop["pending"] + at_stop["not yet dispatched"] == 8
        assert "deliveries_finished=True" in relay.log()

        again = start_relay(path)
        wait_until(lambda: set(receiver.finished) == set(sent), timeout=20)
        time.sleep(0.5)  # a second delivery of any event would show by now
        assert again.stop() == 0
        assert receiver.finished == Counter({event_id: 1 for event_id in sent})
        assert statuses(tmp_path / "data" / "relay.sqlite3") == Counter(done=8)
    finally:
        receiver.close()


@pytest.mark.e2e
def test_sigterm_while_posting_answers_or_refuses_and_keeps_every_2xx_event(
    write_config, start_relay, tmp_path: Path
) -> None:
    path = write_config(OLD)
    relay = start_relay(path)
    poster = Poster(relay.url)
    poster.start()
    wait_until(lambda: len(poster.answers) >= 20)

    relay.signal(signal.SIGTERM)
    assert relay.proc is not None
    assert relay.proc.wait(20) == 0
    poster.done.set()
    poster.join(15)
    relay.stop()

    accepted = [event_id for event_id, status, _ in poster.answers if status == 200]
    assert {status for _, status, _ in poster.answers} == {200}
    again = start_relay(path)
    wait_until(lambda: len(rows(tmp_path / "sheet-a.csv")) >= len(accepted))
    assert sorted(rows(tmp_path / "sheet-a.csv")) == sorted(accepted)
    assert again.stop() == 0


@pytest.mark.e2e
def test_healthz_is_503_while_the_database_cannot_be_written(
    write_config, start_relay, tmp_path: Path
) -> None:
    # Tests run as root, whom file modes do not stop; the immutable attribute
    # stops root too. Only where the file system has no such attribute is the
    # test skipped.
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    relay = start_relay(write_config(OLD))
    database = tmp_path / "data" / "relay.sqlite3"
    assert get_json(relay.url + "/healthz")[0] == 200

    made = subprocess.run(["chattr", "+i", str(database)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"this file system has no immutable attribute: {made.stderr!r}")
    try:
        status, health = get_json(relay.url + "/healthz")
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)

    assert status == 503
    assert health["status"] == "unavailable"
    assert health["store"] == "not writable"
    assert health["workers"] == "alive"
    assert get_json(relay.url + "/healthz") == (
        200,
        {**health, "status": "ok", "store": "writable"},
    )
    assert relay.stop() == 0


def test_a_reload_whose_office_tests_fail_keeps_the_running_config(
    write_config, start_relay, tmp_path: Path
) -> None:
    tested = OLD + (
        "tests:\n"
        "  - name: Sold parts reach the sheet\n"
        "    event: {event_id: t1, event_type: part.status.changed,\n"
        "            timestamp: '2023-01-12T14:17:20+02:00',\n"
        "            event_data: {part_id: '15', status: sold}}\n"
        "    fires: [Every event]\n"
    )
    path = write_config(tested)
    relay = start_relay(path)

    path.write_text(tested.replace("event_type: part.status.changed}", "status: x}"))
    relay.signal(signal.SIGHUP)
    log = relay.wait_for_log("reload outcome=kept_running_config")

    assert "test `Sold parts reach the sheet`: the rules that fired differ" in log
    assert relay.post(event(1)).status_code == 200
    wait_until(lambda: rows(tmp_path / "sheet-a.csv") == [event(1)["event_id"]])
    assert get_json(relay.url + "/healthz")[1]["config"] == "stale"
