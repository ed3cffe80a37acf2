"""The dispatcher turns stored events into deliveries; workers carry them out."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from . import plugins as plugin_registry
from .config import Config, RetryPolicy
from .errors import PermanentError, RetryableError, StoreError, TemplateError
from .events import Event
from .logs import mask
from .plugins.base import Plugin
from .rules import Rule, matching_rules
from .store import Delivery, Store
from .templates import render_value

log = logging.getLogger(__name__)


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
                {k: _plain(v) for k, v in action.settings.items()},
                timeout=action.timeout,
            )
        self._users = 0
        self._retired = False
        self._lock = threading.Lock()

    def acquire(self) -> Runtime:
        with self._lock:
            self._users += 1
        return self

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
    """Return the seconds to wait before attempt number ``attempt + 1``."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), policy.max_delay)
    delay = min(policy.max_delay, policy.first_delay * (2 ** (attempt - 1)))
    return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 — jitter, not crypto


class Dispatcher:
    """Match stored events against the rules and keep workers fed."""

    def __init__(self, store: Store, runtime: Callable[[], Runtime]) -> None:
        self.store = store
        self.runtime = runtime
        self.workers_wanted = 1
        self._wake = threading.Event()
        self._work = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0

    # -- life cycle -----------------------------------------------------------

    def start(self, workers: int) -> None:
        released = self.store.release_claims()
        if released:
            log.info("deliveries=%d outcome=resumed reason=claimed_at_stop", released)
        self._threads.append(
            threading.Thread(target=self._dispatch_loop, name="dispatcher", daemon=True)
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
        self._wake.set()

    def stop(self, grace: float) -> bool:
        """Stop taking work; wait up to ``grace`` seconds for attempts in flight."""
        self._stopping.set()
        self._wake.set()
        with self._work:
            self._work.notify_all()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def alive(self) -> bool:
        """Tell whether the dispatcher and every worker thread are running."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    # -- dispatching ----------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                while not self._stopping.is_set() and self.dispatch_pending():
                    pass
            except Exception:  # noqa: BLE001 — keep dispatching; the store may recover
                log.exception("dispatcher outcome=error")
                self._stopping.wait(1.0)

    def dispatch_pending(self) -> int:
        """Run the rules on stored, unprocessed events; return how many."""
        events = self.store.unprocessed_events()
        for event in events:
            self.dispatch(event)
        return len(events)

    def dispatch(self, event: Event) -> None:
        runtime = self.runtime()
        matched = matching_rules(runtime.config.rules, event)
        rows = [
            (rule.name, index, step.action, runtime.config.actions[step.action].plugin)
            for rule in matched
            for index, step in enumerate(rule.steps)
        ]
        self.store.mark_processed(event.event_id, rows)
        log.info(
            "event_id=%s type=%s outcome=dispatched rules=%s deliveries=%d",
            event.event_id,
            event.event_type,
            ",".join(rule.name for rule in matched) or "-",
            len(rows),
        )
        if rows:
            with self._work:
                self._work.notify_all()

    # -- delivering -----------------------------------------------------------

    def _worker_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                claimed = self.store.claim_due(1)
            except StoreError as exc:
                log.error("worker outcome=claim_failed error=%r", str(exc))
                self._stopping.wait(1.0)
                continue
            if not claimed:
                self._wait_for_work()
                continue
            for delivery in claimed:
                self.attempt(delivery)

    def _wait_for_work(self) -> None:
        next_due = self.store.next_due_at()
        timeout = 1.0 if next_due is None else min(1.0, next_due - time.time())
        if timeout <= 0:
            return
        with self._work:
            if not self._stopping.is_set():
                self._work.wait(timeout)

    def attempt(self, delivery: Delivery) -> str:
        """Make one attempt at a claimed delivery and record its outcome."""
        runtime = self.runtime().acquire()
        try:
            return self._attempt(runtime, delivery)
        finally:
            runtime.release()

    def _attempt(self, runtime: Runtime, delivery: Delivery) -> str:
        started = time.time()
        action = runtime.config.actions.get(delivery.action)
        policy = action.retry if action else runtime.config.delivery.retry
        retry_after: float | None = None
        try:
            event, settings, plugin = self._prepare(runtime, delivery)
            _call_with_timeout(
                lambda: plugin.deliver(settings, event),
                plugin.timeout,
            )
            outcome, error = "done", None
        except PermanentError as exc:
            outcome, error = "dead", str(exc)
        except RetryableError as exc:
            outcome, error, retry_after = "retry", str(exc), exc.retry_after
        except Exception as exc:  # noqa: BLE001 — a plugin's bug is a retryable failure
            outcome, error = "retry", f"{type(exc).__name__}: {exc}"

        number = delivery.attempts + 1
        due_at = None
        if outcome == "retry":
            if number >= policy.attempts:
                outcome = "dead"
                error = f"{error} (gave up after {number} attempts)"
            else:
                due_at = time.time() + backoff(number, policy, retry_after)
        if error is not None:
            error = mask(error, runtime.config.secrets)

        self.store.finish_attempt(delivery, started, outcome, error, due_at)
        self._log_attempt(delivery, number, outcome, error, started, due_at)
        return outcome

    def _prepare(
        self, runtime: Runtime, delivery: Delivery
    ) -> tuple[Event, dict[str, Any], Plugin]:
        rule = runtime.rules.get(delivery.rule)
        if rule is None or delivery.step >= len(rule.steps):
            raise PermanentError(
                f"rule `{delivery.rule}` (step {delivery.step + 1}) is no longer in "
                "the config"
            )
        step = rule.steps[delivery.step]
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
        for key, setting in plugin.settings.items():
            if setting.kind == "path" and settings.get(key):
                settings[key] = os.path.join(runtime.base_dir, settings[key])
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
            extra = f" retry_in={due_at - time.time():.1f}s"
        if error is not None:
            extra += f" error={error!r}"
        log.log(
            level,
            "event_id=%s rule=%r action=%s plugin=%s attempt=%d outcome=%s "
            "duration_ms=%.1f%s",
            delivery.event_id,
            delivery.rule,
            delivery.action,
            delivery.plugin,
            number,
            outcome,
            (time.time() - started) * 1000,
            extra,
        )


def _call_with_timeout(fn: Callable[[], None], timeout: float) -> None:
    """Run ``fn`` in its own thread; give up waiting after ``timeout`` seconds."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 — carried back to the caller
            failure.append(exc)

    thread = threading.Thread(target=run, name="plugin-call", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RetryableError(f"the plugin did not finish within {timeout:g}s")
    if failure:
        raise failure[0]


def _plain(value: Any) -> Any:
    from .yamlsource import plain

    return plain(value)
