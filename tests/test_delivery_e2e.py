"""Delivery end to end: the real relay, a real HTTP receiver on loopback, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import sample, wait_until

pytestmark = pytest.mark.e2e


class Receiver:
    """A loopback HTTP server whose answers a test scripts, path by path."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, dict[str, Any], float]] = []
        self.scripts: dict[str, list[int]] = {}
        self.default: dict[str, int] = {}
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"] or 0))
                arrived = time.monotonic()
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    script = receiver.scripts.get(self.path)
                    status = (
                        script.pop(0)
                        if script
                        else receiver.default.get(self.path, 200)
                    )
                    if 200 <= status < 300:
                        receiver.arrivals.append((self.path, json.loads(body), arrived))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status >= 300 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ids(self, path: str, since: float = 0.0) -> list[str]:
        """Return the event ids that arrived at ``path`` (from ``since`` on)."""
        with self.lock:
            return [
                body["event_id"]
                for p, body, arrived in self.arrivals
                if p == path and arrived >= since
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def config_text(receiver: Receiver, tmp_path: Path, extra_actions: str = "") -> str:
    text = f"""\
auth: {{tokens: ["${{OVOKO_TOKEN}}"]}}
storage: {{path: {tmp_path / "relay.sqlite3"}}}
delivery:
  workers: 3
  timeout: 2s
  grace_period: 1s
  retry: {{attempts: 6, first_delay: 100ms, max_delay: 400ms}}
actions:
  forward:
    plugin: http
    url: "{receiver.url("/hook")}"
  strict:
    plugin: http
    url: "{receiver.url("/strict")}"
    retry: {{attempts: 3, first_delay: 100ms, max_delay: 200ms}}
"""
    text += textwrap.indent(textwrap.dedent(extra_actions).strip("\n"), "  ")
    return (
        text
        + """
rules:
  - name: Forward everything
    when: {event_type: part.status.changed}
    do:
      - action: forward
  - name: Strict target
    when: {status: [reserved]}
    do:
      - action: strict
"""
    )


def event(number: int, status: str = "sold") -> dict[str, Any]:
    body = sample("part-sold")
    body["event_id"] = f"evt-{status}-{number:04d}"
    body["event_data"]["status"] = status
    return body


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "ovoko_relay", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_a_new_event_reaches_the_receiver_within_tens_of_ms(
    receiver: Receiver, write_config: Any, start_relay: Any, tmp_path: Path
) -> None:
    relay = start_relay(write_config(config_text(receiver, tmp_path)))
    relay.post(event(0)).raise_for_status()  # the first request pays for imports
    wait_until(lambda: receiver.ids("/hook"))

    latencies = []
    for number in range(1, 11):
        relay.post(event(number)).raise_for_status()
        answered = time.monotonic()
        wait_until(lambda n=number: f"evt-sold-{n:04d}" in receiver.ids("/hook"))
        latencies.append(receiver.arrivals[-1][2] - answered)

    latencies.sort()
    # Tens of ms on an idle machine; the bound leaves room for a busy CI box.
    assert latencies[len(latencies) // 2] < 0.2, latencies


def test_a_target_failing_twice_is_delivered_on_the_third_attempt(
    receiver: Receiver, write_config: Any, start_relay: Any, tmp_path: Path
) -> None:
    config = write_config(config_text(receiver, tmp_path))
    receiver.scripts["/hook"] = [503, 503]
    relay = start_relay(config)
    relay.post(event(1)).raise_for_status()

    wait_until(lambda: receiver.ids("/hook") == ["evt-sold-0001"], timeout=5)
    listing = wait_until(
        lambda: (
            (out := cli(config, "deliveries", "--event", "evt-sold-0001").stdout)
            and " done " in out
            and out
        ),
        timeout=5,
    )
    assert "Forward everything" in listing
    assert "3 attempts" in listing
    assert listing.count("answered 503") == 2
    assert "#3" in listing
    relay.wait_for_log(r"event_id=evt-sold-0001 .* attempt=3 outcome=done")


def test_a_rejected_delivery_is_dead_at_once_and_replay_delivers_it(
    receiver: Receiver, write_config: Any, start_relay: Any, tmp_path: Path
) -> None:
    config = write_config(config_text(receiver, tmp_path))
    receiver.default["/strict"] = 400
    relay = start_relay(config)
    relay.post(event(1, "reserved")).raise_for_status()
    relay.post(event(2, "reserved")).raise_for_status()
    relay.wait_for_log(r"action=strict .*attempt=1 outcome=dead", count=2)

    dead = cli(config, "deliveries", "--status", "dead")
    assert dead.returncode == 0, dead.stderr
    lines = [line for line in dead.stdout.splitlines() if "strict" in line]
    assert len(lines) == 2
    assert all(" dead " in line and " 1 " in line for line in lines), dead.stdout
    assert "answered 400" in dead.stdout
    assert "attempt=2" not in relay.log()

    receiver.default["/strict"] = 200
    replayed = cli(config, "replay", "evt-reserved-0001")
    assert replayed.returncode == 0, replayed.stderr
    # Replaying an event runs all its deliveries: the dead one and the done one.
    assert "Queued 2 deliveries of event evt-reserved-0001 again" in replayed.stdout
    wait_until(lambda: receiver.ids("/strict") == ["evt-reserved-0001"], timeout=5)
    wait_until(lambda: receiver.ids("/hook").count("evt-reserved-0001") == 2)

    replayed = cli(config, "replay", "--dead")
    assert "Queued 1 dead delivery again" in replayed.stdout
    wait_until(lambda: len(receiver.ids("/strict")) == 2, timeout=5)
    assert cli(config, "deliveries", "--status", "dead").stdout.startswith(
        "No deliveries with status dead"
    )
    assert receiver.ids("/hook").count("evt-reserved-0002") == 1  # was not dead


def test_a_replay_while_the_relay_is_stopped_goes_at_its_next_start(
    receiver: Receiver, write_config: Any, start_relay: Any, tmp_path: Path
) -> None:
    config = write_config(config_text(receiver, tmp_path))
    receiver.default["/strict"] = 400
    relay = start_relay(config)
    relay.post(event(5, "reserved")).raise_for_status()
    relay.wait_for_log(r"action=strict .*outcome=dead")
    assert relay.stop() == 0

    receiver.default["/strict"] = 200
    replayed = cli(config, "replay", "--dead")
    assert replayed.stdout.startswith("Queued 1 dead delivery again.")
    assert receiver.ids("/strict") == []
    start_relay(config)
    wait_until(lambda: receiver.ids("/strict") == ["evt-reserved-0005"], timeout=5)


def test_rematch_runs_the_current_rules_and_keeps_what_was_delivered(
    receiver: Receiver, write_config: Any, start_relay: Any, tmp_path: Path
) -> None:
    text = config_text(receiver, tmp_path)
    config = write_config(text)
    receiver.default["/strict"] = 400
    relay = start_relay(config)
    relay.post(event(3, "reserved")).raise_for_status()
    relay.wait_for_log(r"action=strict .*outcome=dead")
    relay.wait_for_log(r"action=forward .*outcome=done")
    assert relay.stop() == 0

    write_config(text.replace("name: Strict target", "name: Strict partner"))
    receiver.default["/strict"] = 200
    result = cli(config, "replay", "--rematch", "evt-reserved-0003")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Event evt-reserved-0003 will be matched against the current rules again, "
        "and each action they choose is delivered. The running relay does this "
        "within about a second; if it is not running, they go when it next starts.",
        "Removed 1 delivery that had not succeeded (pending or dead), with its "
        "attempt history.",
        "Kept 1 done delivery: a rule and step that already delivered this event "
        "do not send it again.",
    ]

    relay = start_relay(config)
    relay.wait_for_log(r"rule='Strict partner' action=strict .*outcome=done")
    assert receiver.ids("/strict") == ["evt-reserved-0003"]
    assert receiver.ids("/hook") == ["evt-reserved-0003"]  # done, so not sent again
    listing = cli(config, "deliveries", "--event", "evt-reserved-0003").stdout
    assert "Strict partner" in listing
    assert "Strict target" not in listing


def test_replay_of_an_unknown_event_is_a_clear_error(
    receiver: Receiver, write_config: Any, start_relay: Any, tmp_path: Path
) -> None:
    config = write_config(config_text(receiver, tmp_path))
    relay = start_relay(config)
    relay.post(event(7)).raise_for_status()
    wait_until(lambda: receiver.ids("/hook"))

    result = cli(config, "replay", "evt-sold-0008")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: no event with id `evt-sold-0008` is stored in "
        f"{tmp_path / 'relay.sqlite3'} — did you mean `evt-sold-0007`?"
    )
    assert cli(config, "deliveries", "--event", "nope").returncode == 1


def test_store_commands_say_when_there_is_no_database_yet(
    receiver: Receiver, write_config: Any, tmp_path: Path
) -> None:
    config = write_config(config_text(receiver, tmp_path))
    for args in (["deliveries"], ["replay", "--dead"]):
        result = cli(config, *args)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"Error: there is no database at {tmp_path / 'relay.sqlite3'} yet: the "
            "relay has not stored any event there (check `storage.path` in the "
            "config)"
        )
    assert not (tmp_path / "relay.sqlite3").exists()


def test_store_commands_work_without_the_service_environment(
    receiver: Receiver, write_config: Any, start_relay: Any, tmp_path: Path
) -> None:
    config = write_config(config_text(receiver, tmp_path))
    relay = start_relay(config)
    relay.post(event(3)).raise_for_status()
    wait_until(lambda: receiver.ids("/hook"))

    env = {k: v for k, v in relay.env.items() if k != "OVOKO_TOKEN"}
    result = cli(config, "deliveries", env=env)
    assert result.returncode == 0, result.stderr
    assert "evt-sold-0003" in result.stdout


@pytest.mark.parametrize("trouble", ["slow", "down"])
def test_kill_9_with_deliveries_pending_delivers_all_after_restart(
    trouble: str,
    receiver: Receiver,
    write_config: Any,
    start_relay: Any,
    tmp_path: Path,
) -> None:
    config = write_config(config_text(receiver, tmp_path))
    if trouble == "slow":
        receiver.delay = 1.5
    else:
        receiver.default["/hook"] = 503
    relay = start_relay(config)
    wanted = {f"evt-sold-{n:04d}" for n in range(8)}
    for number in range(8):
        relay.post(event(number)).raise_for_status()
    relay.wait_for_log(r"outcome=dispatched", count=8)
    if trouble == "down":
        relay.wait_for_log(r"outcome=retry", count=8)
    relay.kill9()

    receiver.delay = 0.0
    receiver.default.pop("/hook", None)
    restarted = time.monotonic()
    start_relay(config)
    wait_until(lambda: wanted <= set(receiver.ids("/hook", restarted)), timeout=10)
    pending = cli(config, "deliveries", "--status", "pending").stdout
    assert pending.startswith("No deliveries"), pending


TEST_PLUGINS = '''
import os
import sys
import time

from ovoko_relay.plugins import Plugin, Setting


class MoodyPlugin(Plugin):
    """Misbehave in the way `mode` says on a first call, then succeed."""

    name = "moody"
    settings = {
        "mode": Setting(required=True),
        "marker": Setting(kind="path", required=True),
        "key": Setting(secret=True),
    }

    def deliver(self, settings, event):
        first = not os.path.exists(settings["marker"])
        with open(settings["marker"], "a") as f:
            f.write(event.event_id + "\\n")
        if not first:
            return
        if settings["mode"] == "hang":
            time.sleep(60)
        if settings["mode"] == "raise":
            raise RuntimeError("refused with key " + settings["key"])
        if settings["mode"] == "exit":
            sys.exit(3)
'''


def install_test_plugin(tmp_path: Path, broken: bool = False) -> str:
    """Make a plugin distribution importable from a folder; return the folder."""
    site = tmp_path / "site"
    dist = site / "ovoko_relay_moody-1.2.dist-info"
    dist.mkdir(parents=True)
    (site / "moody_plugin.py").write_text(
        TEST_PLUGINS + ("\nimport no_such_module\n" if broken else "")
    )
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ovoko-relay-moody\nVersion: 1.2\n"
    )
    (dist / "entry_points.txt").write_text(
        "[ovoko_relay.plugins]\nmoody = moody_plugin:MoodyPlugin\n"
    )
    return str(site)


@pytest.mark.parametrize("mode", ["hang", "raise", "exit"])
def test_a_misbehaving_plugin_is_retried_and_stops_no_worker(
    mode: str,
    receiver: Receiver,
    write_config: Any,
    start_relay: Any,
    tmp_path: Path,
) -> None:
    site = install_test_plugin(tmp_path)
    moody = f"""
        moody:
          plugin: moody
          mode: {mode}
          marker: {tmp_path / "calls.txt"}
          key: "${{MOODY_KEY}}"
          timeout: 500ms
        """
    text = config_text(receiver, tmp_path, moody).replace(
        "- action: forward", "- action: moody\n      - action: forward"
    )
    config = write_config(text)
    secret = "moody-secret-4711"
    relay = start_relay(config, env={"PYTHONPATH": site, "MOODY_KEY": secret})
    relay.post(event(1)).raise_for_status()

    relay.wait_for_log(r"action=moody .*attempt=2 outcome=done", timeout=10)
    calls = (tmp_path / "calls.txt").read_text().split()
    assert calls == ["evt-sold-0001", "evt-sold-0001"]
    listing = cli(config, "deliveries", "--event", "evt-sold-0001").stdout
    expected = {
        "hang": "the `moody` plugin did not finish within 0.5s",
        "raise": "RuntimeError: refused with key ***",
        "exit": "the plugin raised SystemExit(3)",
    }[mode]
    assert expected in listing

    for number in range(2, 8):
        relay.post(event(number)).raise_for_status()
    wait_until(lambda: len(receiver.ids("/hook")) == 7, timeout=5)
    health = requests.get(relay.url + "/healthz", timeout=5).json()
    assert health["workers"] == "alive"
    assert secret not in relay.log() + listing


def test_the_plugins_command_lists_versions_sources_and_errors(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": install_test_plugin(tmp_path, broken=True)}
    result = subprocess.run(
        [sys.executable, "-m", "ovoko_relay", "plugins"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert rows["PLUGIN"].split() == [
        "PLUGIN", "VERSION", "DISTRIBUTION", "SOURCE", "STATE"
    ]  # fmt: skip
    assert rows["http"].split()[2:] == [
        "ovoko-relay", "ovoko_relay.plugins.forward:HttpPlugin", "ok"
    ]  # fmt: skip
    assert rows["moody"].split()[1:4] == [
        "1.2", "ovoko-relay-moody", "moody_plugin:MoodyPlugin"
    ]  # fmt: skip
    assert (
        "unusable: cannot be imported: No module named 'no_such_module'"
        in rows["moody"]
    )
