"""The dispatcher turns stored events into deliveries; workers carry them out.

One scheduler thread runs the rules on newly stored events (one commit for a
whole batch of them) and claims due deliveries in batches, as many as the
workers can take; worker threads attempt them (through calls.py, so a plugin
that hangs never holds a worker) and record each outcome.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from . import plugins as plugin_registry
from .calls import PluginCalls
from .config import Config, RetryPolicy
from .errors import PermanentError, RetryableError, StoreError, TemplateError
from .events import Event
from .logs import mask, plural, quoted
from .plugins.base import Plugin
from .rules import Rule, Step, matching_rules
from .settings import resolve_paths
from .store import Delivery, Row, Store
from .templates import render_value
from .yamlsource import plain

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
DISPATCH_BATCH = 200
ERROR_CHARS = 1000


class Runtime:
    """One loaded config with its plugin instances; replaced whole on reload."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rules: dict[str, Rule] = {rule.name: rule for rule in config.rules}
        self.base_dir = os.path.dirname(os.path.abspath(config.file))
        available = plugin_registry.installed()
        self.plugins: dict[str, Plugin] = {}
        for name, action in config.actions.items():
            cls = available[action.plugin].cls
            assert cls is not None  # config.load only accepts usable plugins
            self.plugins[name] = cls(
                {k: plain(v) for k, v in action.settings.items()},
                timeout=action.timeout,
            )
        self._users = 0
        self._retired = False
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Count one more user; False once retired (its plugins may be closed)."""
        with self._lock:
            if self._retired:
                return False
            self._users += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            close = self._retired and self._users == 0
        if close:
            self.close()

    def retire(self) -> None:
        """Close the plugins once no worker is using this runtime any more."""
        with self._lock:
            self._retired = True
            close = self._users == 0
        if close:
            self.close()

    def close(self) -> None:
        for name, plugin in self.plugins.items():
            try:
                plugin.close()
            except Exception as exc:  # noqa: BLE001 — a plugin's close must not crash us
                log.warning("action=%s outcome=close_failed error=%r", name, str(exc))


def backoff(attempt: int, policy: RetryPolicy, retry_after: float | None) -> float:
    """Return the seconds to wait after failed attempt number ``attempt``.

    The delay doubles from ``first_delay`` up to ``max_delay``; the wait is a
    random point in its upper half, so retries of many deliveries spread out.
    A receiver's Retry-After wins, capped at ``max_delay``.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), policy.max_delay)
    exponent = min(max(attempt - 1, 0), 60)
    delay = min(policy.max_delay, policy.first_delay * 2.0**exponent)
    return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 — jitter, not crypto


class Dispatcher:
    """Match stored events against the rules and keep the workers fed."""

    def __init__(
        self,
        store: Store,
        runtime: Callable[[], Runtime],
        on_attempt: Callable[[str, str, str, float], None] | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.on_attempt = on_attempt
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._queue: queue.SimpleQueue[Delivery | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._outstanding = 0
        self._workers = 0
        self._unstarted: list[Delivery] = []
        self._threads: list[threading.Thread] = []
        self._calls = PluginCalls()

    # -- life cycle -----------------------------------------------------------

    def start(self, workers: int) -> None:
        """Resume what a previous run left claimed, then start all threads."""
        released = self.store.release_claims()
        if released:
            log.info("deliveries=%d outcome=resumed reason=claimed_at_stop", released)
        self._workers = workers
        self._threads.append(
            threading.Thread(target=self._schedule_loop, name="dispatcher", daemon=True)
        )
        for number in range(workers):
            self._threads.append(
                threading.Thread(
                    target=self._worker_loop, name=f"worker-{number}", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """Tell the dispatcher a new event was stored."""
        self._kick.set()

    def stop(self, grace: float) -> bool:
        """Stop taking work; wait up to ``grace`` seconds for attempts in flight.

        Deliveries claimed but not yet started go back to pending at once;
        attempts still running after the grace period are resumed at the next
        start. Return True if every thread ended in time.
        """
        self._stopping.set()
        self._kick.set()
        for _ in range(self._workers):
            self._queue.put(None)
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

        unstarted = list(self._unstarted)
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                unstarted.append(item)
        if unstarted:
            try:
                self.store.release([d.id for d in unstarted])
            except StoreError as exc:
                log.error("deliveries=%d outcome=release_failed error=%r",
                          len(unstarted), str(exc))  # fmt: skip
        self._calls.retire_all()
        return not any(thread.is_alive() for thread in self._threads)

    def alive(self) -> bool:
        """Tell whether the dispatcher and every worker thread are running."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    # -- scheduling -----------------------------------------------------------

    def _schedule_loop(self) -> None:
        while not self._stopping.is_set():
            # NOTE: cleared before looking, so a kick during the look is kept.
            self._kick.clear()
            try:
                wait = self._schedule_once()
            except Exception:  # noqa: BLE001 — keep scheduling; the store may recover
                log.exception("dispatcher outcome=error")
                self._stopping.wait(POLL_SECONDS)
                continue
            if wait > 0:
                self._kick.wait(wait)

    def _schedule_once(self) -> float:
        """Dispatch new events, claim due deliveries; return how long to wait.

        Zero means more may be waiting already.
        """
        try:
            dispatched = self.dispatch_pending()
        except Exception:  # noqa: BLE001 — deliveries already stored still go out
            log.exception("dispatcher outcome=dispatch_error")
            dispatched = 0
        more = dispatched == DISPATCH_BATCH
        free = self._free_slots()
        if free <= 0 or self._stopping.is_set():
            return 0.0 if more else POLL_SECONDS
        # PERF: a read here spares the writer a claim that finds nothing.
        next_due = self.store.next_due_at()
        now = time.time()
        if next_due is None or next_due > now:
            if more:
                return 0.0
            return (
                POLL_SECONDS
                if next_due is None
                else min(POLL_SECONDS, max(0.005, next_due - now))
            )
        claimed = self.store.claim_due(free)
        with self._lock:
            self._outstanding += len(claimed)
        for delivery in claimed:
            self._queue.put(delivery)
        # The claim may have left some due: look again at once, or soon.
        return 0.0 if more or len(claimed) == free else 0.005

    def _free_slots(self) -> int:
        # Twice the workers: each worker finds its next delivery already
        # claimed, yet a delivery waits behind at most one slow attempt.
        with self._lock:
            return 2 * self._workers - self._outstanding

    def _finished_one(self) -> None:
        with self._lock:
            self._outstanding -= 1
            low = self._outstanding <= self._workers
        if low:
            self._kick.set()

    # -- dispatching ----------------------------------------------------------

    def dispatch_pending(self) -> int:
        """Run the rules on a batch of unprocessed events; return how many."""
        events = self.store.unprocessed_events(DISPATCH_BATCH)
        if not events:
            return 0
        runtime = self.runtime()
        batch = [(event, self._match(runtime, event)) for event in events]
        self.store.record_deliveries([(e.event_id, rows) for e, rows in batch])
        for event, rows in batch:
            log.info(
                "event_id=%s type=%s outcome=dispatched rules=%r deliveries=%d",
                quoted(event.event_id),
                quoted(event.event_type),
                ",".join(dict.fromkeys(row[0] for row in rows)) or "-",
                len(rows),
            )
        return len(events)

    def _match(self, runtime: Runtime, event: Event) -> list[Row]:
        try:
            matched = matching_rules(runtime.config.rules, event)
            return [
                (
                    rule.name,
                    index,
                    step.action,
                    runtime.config.actions[step.action].plugin,
                    step.key,
                )
                for rule in matched
                for index, step in enumerate(rule.steps)
            ]
        except Exception:  # noqa: BLE001 — one odd event must not block the others
            # TODO: the event is kept with no deliveries; only `replay` runs it
            # again, so a bug in matching needs an operator to notice the log.
            log.exception("event_id=%s outcome=dispatch_failed", quoted(event.event_id))
            return []

    # -- delivering -----------------------------------------------------------

    def _worker_loop(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            try:
                if self._stopping.is_set():
                    self._unstarted.append(delivery)
                else:
                    self.attempt(delivery)
            except Exception:  # noqa: BLE001 — a worker must outlive any delivery
                log.exception(
                    "event_id=%s action=%s outcome=worker_error",
                    quoted(delivery.event_id),
                    delivery.action,
                )
            finally:
                self._finished_one()

    def attempt(self, delivery: Delivery) -> str:
        """Make one attempt at a claimed delivery and record its outcome."""
        runtime = self.runtime()
        while not runtime.acquire():
            if self.runtime() is runtime:
                # Shutting down: the plugins are closed; leave it for next start.
                self._unstarted.append(delivery)
                return "released"
            runtime = self.runtime()
        try:
            return self._attempt(runtime, delivery)
        finally:
            runtime.release()

    def _attempt(self, runtime: Runtime, delivery: Delivery) -> str:
        started = time.time()
        action = runtime.config.actions.get(delivery.action)
        policy = action.retry if action else runtime.config.delivery.retry
        secrets = set(runtime.config.secrets)
        retry_after: float | None = None
        try:
            event, settings, plugin = self._prepare(runtime, delivery)
            secrets.update(_secret_values(plugin, settings))
            self._calls.call(
                quoted(delivery.event_id),
                delivery.action,
                plugin.name,
                plugin.timeout,
                lambda: plugin.deliver(settings, event),
            )
            outcome, error = "done", None
        except PermanentError as exc:
            outcome, error = "dead", _describe(exc)
        except RetryableError as exc:
            outcome, error, retry_after = "retry", _describe(exc), exc.retry_after
        except Exception as exc:  # noqa: BLE001 — a plugin's bug is a retryable failure
            outcome, error = "retry", f"{type(exc).__name__}: {exc}"

        number = delivery.attempts + 1
        due_at = None
        if outcome == "retry":
            if number >= policy.attempts:
                outcome = "dead"
                error = f"{error} (gave up after {plural(number, 'attempt')})"
            else:
                due_at = time.time() + backoff(number, policy, retry_after)
        if error is not None:
            error = _shorten(mask(error, secrets))

        self._record(delivery, started, outcome, error, due_at)
        self._log_attempt(delivery, number, outcome, error, started, due_at)
        if self.on_attempt is not None:
            try:
                self.on_attempt(
                    delivery.plugin, delivery.action, outcome, time.time() - started
                )
            except Exception:  # noqa: BLE001 — metrics must not fail a delivery
                log.exception("action=%s outcome=metrics_failed", delivery.action)
        return outcome

    def _record(
        self,
        delivery: Delivery,
        started: float,
        outcome: str,
        error: str | None,
        due_at: float | None,
    ) -> None:
        while True:
            try:
                self.store.finish_attempt(delivery, started, outcome, error, due_at)
                return
            except StoreError as exc:
                # The row stays claimed; a restart would attempt it again.
                log.error(
                    "event_id=%s action=%s outcome=record_failed error=%r",
                    quoted(delivery.event_id),
                    delivery.action,
                    str(exc),
                )
                if self._stopping.wait(POLL_SECONDS):
                    return

    def _prepare(
        self, runtime: Runtime, delivery: Delivery
    ) -> tuple[Event, dict[str, Any], Plugin]:
        rule = runtime.rules.get(delivery.rule)
        step = find_step(rule, delivery.step, delivery.action, delivery.step_key)
        if rule is None or step is None:
            raise PermanentError(gone_message(delivery, rule is None))
        plugin = runtime.plugins.get(step.action)
        if plugin is None:
            raise PermanentError(f"action `{step.action}` is no longer in the config")
        event = self.store.get_event(delivery.event_id)
        if event is None:
            raise PermanentError(f"event {delivery.event_id} is no longer stored")
        context = {"event": event.envelope, "data": event.data, "rule": rule.name}
        try:
            settings = render_value(step.compiled, context)
        except TemplateError as exc:
            raise PermanentError(str(exc)) from exc
        resolve_paths(runtime.base_dir, plugin.settings, step.compiled, settings)
        return event, settings, plugin

    def _log_attempt(
        self,
        delivery: Delivery,
        number: int,
        outcome: str,
        error: str | None,
        started: float,
        due_at: float | None,
    ) -> None:
        level = {"done": logging.INFO, "retry": logging.WARNING}.get(
            outcome, logging.ERROR
        )
        extra = ""
        if due_at is not None:
            extra = f" retry_in={max(0.0, due_at - time.time()):.1f}s"
        if error is not None:
            extra += f" error={error!r}"
        log.log(
            level,
            "event_id=%s rule=%r action=%s plugin=%s attempt=%d outcome=%s "
            "duration_ms=%.1f%s",
            quoted(delivery.event_id),
            delivery.rule,
            delivery.action,
            delivery.plugin,
            number,
            outcome,
            (time.time() - started) * 1000,
            extra,
        )


def find_step(rule: Rule | None, index: int, action: str, key: str = "") -> Step | None:
    """Return the step of ``rule`` a delivery of ``action`` stored at ``index`` runs.

    A reload may have moved the step: the one written the same way (same
    ``key``) comes first; else the one at ``index`` if it still runs
    ``action``; else the rule's first step that does.
    """
    if rule is None:
        return None
    same = next((step for step in rule.steps if key and step.key == key), None)
    if same is not None:
        return same
    if 0 <= index < len(rule.steps) and rule.steps[index].action == action:
        return rule.steps[index]
    return next((step for step in rule.steps if step.action == action), None)


def gone_message(delivery: Delivery, rule_gone: bool) -> str:
    """Explain that a delivery's rule or action left the config after its event came."""
    what = f"rule `{delivery.rule}` is no longer in the config"
    if not rule_gone:
        what = (
            f"rule `{delivery.rule}` no longer has a step with action "
            f"`{delivery.action}`"
        )
    return (
        f"{what}: it was changed or removed after event {delivery.event_id} "
        "arrived; to run the current rules on this event, use "
        f"`ovoko-relay replay --rematch {delivery.event_id}`"
    )


def _until(next_due: float | None) -> float:
    """Return how long to wait for a delivery due at ``next_due`` (or a kick)."""
    if next_due is None:
        return POLL_SECONDS
    return min(POLL_SECONDS, max(0.005, next_due - time.time()))


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _shorten(text: str) -> str:
    if len(text) <= ERROR_CHARS:
        return text
    return text[: ERROR_CHARS - 1] + "…"


def _secret_values(plugin: Plugin, settings: dict[str, Any]) -> list[str]:
    """Return the rendered values of the settings the plugin declares secret."""
    found = []
    for key, setting in plugin.settings.items():
        value = settings.get(key)
        if setting.secret and isinstance(value, str) and value:
            found.append(value)
    return found
