"""replay --rematch after a rule gained a step: found by a second review."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

from conftest import sample

from ovoko_relay import config as config_module
from ovoko_relay.dispatch import Dispatcher, Runtime
from ovoko_relay.events import parse_body
from ovoko_relay.store import Store

BEFORE = """\
auth: {tokens: [a-test-token]}
storage: {path: relay.sqlite3}
actions:
  channel: {plugin: log, message: "to the channel"}
  sheet: {plugin: log, message: "to the sheet"}
rules:
  - name: Part sold
    do:
      - action: channel
"""
# The office adds a spreadsheet row in front of the channel message.
AFTER = BEFORE.replace(
    "      - action: channel\n", "      - action: sheet\n      - action: channel\n"
)


def test_rematch_after_a_step_was_inserted_sends_the_new_action_not_the_done_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(BEFORE))
    store = Store(str(tmp_path / "relay.sqlite3"))
    runtime = Runtime(config_module.load(str(path)))
    dispatcher = Dispatcher(store, lambda: runtime)
    event = parse_body(json.dumps(sample("part-sold")).encode())
    assert store.add_event(event, event.body)
    dispatcher.dispatch_pending()
    (sent,) = store.claim_due(5)
    store.finish_attempt(sent, time.time(), "done", None)

    path.write_text(textwrap.dedent(AFTER))
    runtime = Runtime(config_module.load(str(path)))
    store.rematch_event(event.event_id)
    dispatcher.dispatch_pending()

    deliveries = store.deliveries(event_id=event.event_id)
    store.close()
    pending = sorted(d.action for d in deliveries if d.status == "pending")
    # The channel already has its message; the new sheet step has not run yet.
    assert pending == ["sheet"]


ONE_MESSAGE = """\
auth: {tokens: [a-test-token]}
storage: {path: relay.sqlite3}
actions:
  channel: {plugin: log}
rules:
  - name: Part sold
    do:
      - {action: channel, message: "Part sold"}
"""
# The office puts a second message to the same channel in front of the first.
TWO_MESSAGES = ONE_MESSAGE.replace(
    '      - {action: channel, message: "Part sold"}\n',
    '      - {action: channel, message: "Call the buyer"}\n'
    '      - {action: channel, message: "Part sold"}\n',
)


def test_a_pending_delivery_keeps_its_message_when_a_reload_adds_one_to_its_action(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(ONE_MESSAGE)
    store = Store(str(tmp_path / "relay.sqlite3"))
    runtime = Runtime(config_module.load(str(path)))
    dispatcher = Dispatcher(store, lambda: runtime)
    event = parse_body(json.dumps(sample("part-sold")).encode())
    assert store.add_event(event, event.body)
    dispatcher.dispatch_pending()

    path.write_text(TWO_MESSAGES)
    runtime = Runtime(config_module.load(str(path)))
    (pending,) = store.claim_due(5)
    _, settings, _ = dispatcher._prepare(runtime, pending)
    store.close()
    # The event chose "Part sold"; the reload must not swap in another message.
    assert settings["message"] == "Part sold"
