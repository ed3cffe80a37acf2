"""Deliveries pending across a reload: found by trying to break the relay."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import sample, wait_until
from plugin_peers import start_receiver

BEFORE = """
    auth:
      tokens: ["${{OVOKO_TOKEN}}"]
    storage:
      path: ./data/relay.sqlite3
    delivery:
      retry: {{attempts: 5, first_delay: 1s, max_delay: 1s}}
    actions:
      forward: {{plugin: http, url: "{url}/hook"}}
      note: {{plugin: log}}
    rules:
      - name: Part sold
        when: {{status: sold}}
        do:
          - action: forward
"""

# The office puts a log line in front of the forward while a forward is pending.
AFTER = BEFORE.replace(
    "          - action: forward\n",
    "          - action: note\n"
    '            message: "noted {{{{ event.event_id }}}}"\n'
    "          - action: forward\n",
)


@pytest.fixture
def receiver():
    yield from start_receiver()


def test_a_pending_delivery_keeps_its_action_when_a_reload_adds_a_step(
    write_config, start_relay, receiver
):
    receiver.answer(500, b"down for a moment")
    path = write_config(BEFORE.format(url=receiver.url))
    relay = start_relay(path)
    event = sample("part-sold")

    assert relay.post(event).status_code == 200
    receiver.wait(1)
    path.write_text(textwrap.dedent(AFTER.format(url=receiver.url)))
    relay.signal(signal.SIGHUP)
    relay.wait_for_log("reload outcome=applied")

    # The forward that failed once must be tried again and reach the receiver.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: len(receiver.requests) >= 2, timeout=8)
    assert len(receiver.requests) >= 2, relay.log()
    assert receiver.requests[1].headers["X-Ovoko-Event-Id"] == event["event_id"]


def replay(config: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "ovoko_relay", "replay", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())


def test_a_pending_delivery_of_a_renamed_rule_is_dead_until_rematched(
    write_config, start_relay, receiver, relay_env
):
    # The tester first asked that the forward survive the rename. A delivery
    # is kept by rule name, so a renamed rule is a rule gone: the delivery goes
    # dead and says how to run the current rules, which `--rematch` does.
    receiver.answer(500, b"down for a moment")
    path = write_config(BEFORE.format(url=receiver.url))
    relay = start_relay(path)
    event_id = sample("part-sold")["event_id"]

    assert relay.post(sample("part-sold")).status_code == 200
    receiver.wait(1)
    renamed = BEFORE.replace("name: Part sold", "name: Sold parts")
    path.write_text(textwrap.dedent(renamed.format(url=receiver.url)))
    relay.signal(signal.SIGHUP)
    relay.wait_for_log("reload outcome=applied")

    relay.wait_for_log(
        rf"rule='Part sold' action=forward plugin=http attempt=2 outcome=dead "
        rf".*rule `Part sold` is no longer in the config: it was changed or removed "
        rf"after event {event_id} arrived; to run the current rules on this event, "
        rf"use `ovoko-relay replay --rematch {event_id}`"
    )

    said = replay(path, relay_env, event_id)
    assert said.startswith(f"Queued 1 delivery of event {event_id} again."), said
    assert (
        f"Warning: 1 delivery of event {event_id} (`Part sold` → forward) will fail "
        "again: its rule or action is no longer in the current config. To run the "
        "current rules on this event instead, use `ovoko-relay replay --rematch "
        f"{event_id}`."
    ) in said
    relay.wait_for_log(r"rule='Part sold' action=forward .*outcome=dead", count=2)
    assert len(receiver.requests) == 1

    said = replay(path, relay_env, "--rematch", event_id)
    assert said.startswith(
        f"Event {event_id} will be matched against the current rules again"
    ), said
    assert "Removed 1 delivery that had not succeeded (pending or dead)" in said
    receiver.wait(2)
    assert receiver.requests[1].headers["X-Ovoko-Event-Id"] == event_id
    relay.wait_for_log(
        rf"event_id={event_id} rule='Sold parts' action=forward plugin=http "
        "attempt=1 outcome=done"
    )
