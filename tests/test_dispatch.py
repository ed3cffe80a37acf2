"""Retry policy, its config, and the dispatcher's workers with a real store."""

from __future__ import annotations

import json
import statistics
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import sample, wait_until

from ovoko_relay import calls
from ovoko_relay import config as config_module
from ovoko_relay.config import RetryPolicy
from ovoko_relay.dispatch import Dispatcher, Runtime, backoff, find_step
from ovoko_relay.errors import ConfigError, PermanentError, RetryableError
from ovoko_relay.events import Event
from ovoko_relay.plugins import Plugin, Setting
from ovoko_relay.rules import Rule, Step
from ovoko_relay.store import Store
from ovoko_relay.yamlsource import Mark

CONFIG = """\
auth: {tokens: [a-test-token]}
storage: {path: relay.sqlite3}
delivery:
  workers: 2
  retry: {attempts: 3, first_delay: 10ms, max_delay: 40ms}
actions:
  note:
    plugin: log
    message: "Part {{ data.part_id }}"
    timeout: 300ms
rules:
  - name: Part sold
    do:
      - action: note
"""


# -- backoff ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "first", "longest", "full"),
    [
        (1, 2.0, 3600.0, 2.0),
        (2, 2.0, 3600.0, 4.0),
        (5, 2.0, 3600.0, 32.0),
        (12, 2.0, 3600.0, 3600.0),
        (3, 0.1, 0.25, 0.25),
        (10_000, 2.0, 3600.0, 3600.0),
    ],
)
def test_backoff_doubles_up_to_the_longest_delay_with_jitter_in_the_upper_half(
    attempt: int, first: float, longest: float, full: float
) -> None:
    policy = RetryPolicy(attempts=8, first_delay=first, max_delay=longest)

    waits = [backoff(attempt, policy, None) for _ in range(500)]

    assert all(full / 2 <= wait <= full for wait in waits)
    assert statistics.pstdev(waits) > full / 20  # the jitter really spreads them


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(30.0, 30.0), (7200.0, 3600.0), (-5.0, 0.0)]
)
def test_backoff_honours_retry_after_within_the_longest_delay(
    retry_after: float, expected: float
) -> None:
    policy = RetryPolicy(attempts=8, first_delay=2.0, max_delay=3600.0)
    assert backoff(1, policy, retry_after) == expected


# -- retry and timeout settings -----------------------------------------------


def load(tmp_path: Path, text: str) -> config_module.Config:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return config_module.load(str(path), environ={})


def test_an_action_overrides_only_the_retry_settings_it_names(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
        auth: {tokens: [a-test-token]}
        delivery:
          timeout: 5s
          retry: {attempts: 4, first_delay: 500ms, max_delay: 1m}
        actions:
          plain: {plugin: log, message: hi}
          patient:
            plugin: log
            message: hi
            timeout: 1.5s
            retry: {attempts: 20, max_delay: 2h}
        """,
    )
    assert config.actions["plain"].retry == RetryPolicy(4, 0.5, 60.0)
    assert config.actions["plain"].timeout == 5.0
    assert config.actions["patient"].retry == RetryPolicy(20, 0.5, 7200.0)
    assert config.actions["patient"].timeout == 1.5


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        (
            "actions:\n  a: {plugin: log, message: hi, timeout: 0s}",
            "3:42: `timeout` must be longer than zero, like 500ms, 2s or 1m, not `0s`",
        ),
        (
            "actions:\n  a: {plugin: log, message: hi, retry: {attempts: 0}}",
            "3:51: `attempts` must be a whole number of at least 1, not `0`",
        ),
        (
            "actions:\n  a: {plugin: log, message: hi, retry: {first_delay: soon}}",
            "3:54: `first_delay` must be a duration like 500ms, 2s, 5m or 1h, not "
            "`soon`",
        ),
        (
            "actions:\n  a: {plugin: log, message: hi}\n"
            "rules:\n  - name: R\n    do:\n      - action: a\n        timeout: 5s",
            "8:9: `timeout` belongs to the action `a` (under `actions:`, line 3), not "
            "to a step of a rule; to give this rule its own `timeout`, define a "
            "second action with the same plugin",
        ),
        (
            "actions:\n  a: {plugin: log, message: hi}\n"
            "rules:\n  - name: R\n    do:\n      - action: a\n"
            "        retry: {attempts: 2}",
            "8:9: `retry` belongs to the action `a`",
        ),
    ],
)
def test_wrong_retry_and_timeout_settings_are_located_and_explained(
    tmp_path: Path, snippet: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "auth: {tokens: [a-test-token]}\n" + snippet + "\n")
    assert any(message in str(p) for p in caught.value.problems), caught.value


# -- the dispatcher with a real store -----------------------------------------


class Scripted(Plugin):
    """Do what the test says on each call: a callable per attempt."""

    name = "log"
    settings = {"message": Setting(required=True), "key": Setting(secret=True)}

    def __init__(self, steps: list[Callable[[], None]], timeout: float) -> None:
        super().__init__({}, timeout=timeout)
        self.steps = steps
        self.calls: list[float] = []

    def deliver(self, settings: Mapping[str, Any], event: Event) -> None:
        self.calls.append(time.monotonic())
        step = self.steps.pop(0) if self.steps else (lambda: None)
        step()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[Store, Runtime]]:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(CONFIG)
    config = config_module.load(str(config_path), environ={})
    store = Store(config.storage.path)
    yield store, Runtime(config)
    store.close()


def with_plugin(runtime: Runtime, plugin: Scripted) -> Runtime:
    runtime.plugins["note"] = plugin
    return runtime


def queue_event(store: Store, event_id: str) -> None:
    body = sample("part-sold")
    body["event_id"] = event_id
    store.add_event(Event.from_envelope(body), json.dumps(body))


def fail(exc: Exception) -> Callable[[], None]:
    def step() -> None:
        raise exc

    return step


def test_a_stored_event_reaches_a_worker_at_once(
    relay: tuple[Store, Runtime],
) -> None:
    store, runtime = relay
    plugin = Scripted([], timeout=1.0)
    dispatcher = Dispatcher(store, lambda: with_plugin(runtime, plugin))
    dispatcher.start(workers=2)
    try:
        time.sleep(0.1)  # let the threads settle into waiting
        delays = []
        for number in range(5):
            queue_event(store, f"e{number}")
            woken = time.monotonic()
            dispatcher.wake()
            wait_until(lambda n=number: len(plugin.calls) == n + 1, timeout=2)
            delays.append(plugin.calls[-1] - woken)
    finally:
        dispatcher.stop(grace=1.0)

    # Milliseconds when idle; far below the one-second poll even on a busy box.
    assert statistics.median(delays) < 0.1, delays
    assert max(delays) < 0.5, delays
    assert {d.status for d in store.deliveries()} == {"done"}


def test_retryable_failures_are_retried_then_given_up(
    relay: tuple[Store, Runtime],
) -> None:
    store, runtime = relay
    plugin = Scripted([fail(RetryableError("the target answered 503"))] * 3, 1.0)
    dispatcher = Dispatcher(store, lambda: with_plugin(runtime, plugin))
    queue_event(store, "e1")
    dispatcher.dispatch_pending()

    outcomes = []
    for _ in range(3):
        [delivery] = wait_until(lambda: store.claim_due(1), timeout=1)
        outcomes.append(dispatcher.attempt(delivery))

    assert outcomes == ["retry", "retry", "dead"]
    [dead] = store.deliveries()
    assert dead.last_error == "the target answered 503 (gave up after 3 attempts)"
    gaps = [b - a for a, b in zip(plugin.calls, plugin.calls[1:], strict=False)]
    assert gaps[0] >= 0.005 and gaps[1] >= 0.01  # backoff: 5-10 ms, then 10-20 ms


@pytest.mark.parametrize(
    ("exc", "outcome", "error"),
    [
        (PermanentError("the target answered 400"), "dead", "the target answered 400"),
        (ValueError("bad value"), "retry", "ValueError: bad value"),
        (RetryableError(""), "retry", "RetryableError"),
    ],
)
def test_each_kind_of_failure_is_recorded_as_such(
    relay: tuple[Store, Runtime], exc: Exception, outcome: str, error: str
) -> None:
    store, runtime = relay
    dispatcher = Dispatcher(
        store, lambda: with_plugin(runtime, Scripted([fail(exc)], 1))
    )
    queue_event(store, "e1")
    dispatcher.dispatch_pending()
    [delivery] = store.claim_due(1)

    assert dispatcher.attempt(delivery) == outcome
    [attempt] = store.attempts(delivery.id)
    assert (attempt["outcome"], attempt["error"]) == (outcome, error)


def test_secrets_in_a_plugin_error_are_masked(relay: tuple[Store, Runtime]) -> None:
    store, runtime = relay
    secret = "hunter2-secret-value"
    runtime.rules["Part sold"].steps[0].compiled["key"] = secret
    plugin = Scripted([fail(RuntimeError(f"login failed for {secret}!"))], 1.0)
    dispatcher = Dispatcher(store, lambda: with_plugin(runtime, plugin))
    queue_event(store, "e1")
    dispatcher.dispatch_pending()
    [delivery] = store.claim_due(1)

    dispatcher.attempt(delivery)

    assert (
        store.attempts(delivery.id)[0]["error"] == "RuntimeError: login failed for ***!"
    )


def test_a_hanging_call_times_out_and_too_many_hanging_calls_start_no_more(
    relay: tuple[Store, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, runtime = relay
    monkeypatch.setattr(calls, "HANGING_LIMIT", 2)
    release = threading.Event()
    plugin = Scripted([release.wait, release.wait], timeout=0.1)
    dispatcher = Dispatcher(store, lambda: with_plugin(runtime, plugin))
    for number in range(3):
        queue_event(store, f"e{number}")
    dispatcher.dispatch_pending()
    deliveries = store.claim_due(3)

    started = time.monotonic()
    outcomes = [dispatcher.attempt(d) for d in deliveries]
    took = time.monotonic() - started

    assert outcomes == ["retry", "retry", "retry"]
    assert len(plugin.calls) == 2  # the third was refused without a call
    assert took < 1.0  # two timeouts of 0.1 s, and no wait for the third
    errors = [store.attempts(d.id)[0]["error"] for d in deliveries]
    assert errors[0] == "the `log` plugin did not finish within 0.1s"
    assert errors[2].startswith("2 earlier attempts of action `note` are still running")

    release.set()
    wait_until(lambda: not dispatcher._calls._hanging.get("note"), timeout=2)
    queue_event(store, "e9")
    dispatcher.dispatch_pending()
    [later] = store.claim_due(1)
    assert dispatcher.attempt(later) == "done"


def test_stop_returns_claimed_but_unstarted_deliveries_to_pending(
    relay: tuple[Store, Runtime],
) -> None:
    store, runtime = relay
    release = threading.Event()
    plugin = Scripted([release.wait], timeout=5.0)
    dispatcher = Dispatcher(store, lambda: with_plugin(runtime, plugin))
    for number in range(4):
        queue_event(store, f"e{number}")
    dispatcher.start(workers=1)
    wait_until(lambda: plugin.calls, timeout=2)
    wait_until(lambda: store.count_deliveries("claimed") == 2, timeout=2)

    assert dispatcher.stop(grace=0.2) is False  # one attempt still in flight
    assert store.count_deliveries("claimed") == 1
    assert store.count_deliveries("pending") == 3
    release.set()


# -- which step a stored delivery runs ----------------------------------------


def rule_of(*actions: str) -> Rule:
    mark = Mark("config.yaml", 1, 1)
    steps = [Step(action, {"n": n}, mark) for n, action in enumerate(actions)]
    return Rule("Part sold", when=None, steps=steps, mark=mark)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("actions", "index", "action", "expected"),
    [
        (["forward"], 0, "forward", 0),
        (["note", "forward"], 0, "forward", 1),  # a step was put in front of it
        (["forward", "note", "forward"], 2, "forward", 2),  # its own index still fits
        (
            ["note", "forward", "forward"],
            0,
            "forward",
            1,
        ),  # else the first that runs it
        (["forward"], 3, "forward", 0),  # steps were removed above it
        (["note"], 0, "forward", None),  # the rule no longer runs the action
        ([], 0, "forward", None),
    ],
)
def test_a_delivery_runs_the_step_with_its_stored_action(
    actions: list[str], index: int, action: str, expected: int | None
) -> None:
    rule = rule_of(*actions)

    step = find_step(rule, index, action)

    assert (None if step is None else step.overrides["n"]) == expected


def test_a_delivery_whose_rule_is_gone_has_no_step() -> None:
    assert find_step(None, 0, "forward") is None


@pytest.mark.parametrize(
    ("rule", "step", "action", "outcome", "error"),
    [
        ("Part sold", 4, "note", "done", None),
        (
            "Part sold",
            0,
            "forward",
            "dead",
            "rule `Part sold` no longer has a step with action `forward`: it was "
            "changed or removed after event e1 arrived; to run the current rules on "
            "this event, use `ovoko-relay replay --rematch e1`",
        ),
        (
            "Sold parts",
            0,
            "note",
            "dead",
            "rule `Sold parts` is no longer in the config: it was changed or removed "
            "after event e1 arrived; to run the current rules on this event, use "
            "`ovoko-relay replay --rematch e1`",
        ),
    ],
)
def test_a_stored_delivery_is_matched_to_the_current_rules_by_its_action(
    relay: tuple[Store, Runtime],
    rule: str,
    step: int,
    action: str,
    outcome: str,
    error: str | None,
) -> None:
    store, runtime = relay
    plugin = Scripted([], timeout=1.0)
    dispatcher = Dispatcher(store, lambda: with_plugin(runtime, plugin))
    queue_event(store, "e1")
    store.record_deliveries([("e1", [(rule, step, action, "log", "")])])
    [delivery] = store.claim_due(1)

    assert dispatcher.attempt(delivery) == outcome
    [attempt] = store.attempts(delivery.id)
    assert attempt["error"] == error
    assert len(plugin.calls) == (1 if outcome == "done" else 0)
