"""Plugin calls on reusable threads, waited for no longer than their timeout.

Each worker hands its plugin calls to a caller thread of its own and waits at
most the action's timeout: a plugin that hangs costs that caller thread (the
worker starts a new one), never the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from .errors import RetryableError
from .logs import quoted

log = logging.getLogger(__name__)

# Abandoned calls of one action that may still run before no new one starts:
# a plugin that ignores its timeout then costs a few threads, not thousands.
HANGING_LIMIT = 8


class PluginCalls:
    """Make plugin calls for many workers, each on a caller thread of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hanging: dict[str, int] = {}
        self._local = threading.local()
        self._callers: list[_Caller] = []

    def call(
        self, event_id: str, action: str, plugin: str, timeout: float,
        fn: Callable[[], None],
    ) -> None:  # fmt: skip
        """Run ``fn``; raise what it raised, or RetryableError after ``timeout``."""
        with self._lock:
            hanging = self._hanging.get(action, 0)
        if hanging >= HANGING_LIMIT:
            raise RetryableError(
                f"{hanging} earlier attempts of action `{action}` are still running "
                "after their timeout; no new one starts until they end"
            )

        finished = threading.Event()
        failure: list[BaseException] = []
        abandoned = False

        def run() -> None:
            nonlocal abandoned
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 — carried back to the worker
                failure.append(exc)
            except BaseException as exc:  # noqa: BLE001 — e.g. sys.exit in a plugin
                failure.append(RetryableError(f"the plugin raised {exc!r}"))
            finally:
                with self._lock:
                    finished.set()
                    if abandoned:
                        self._hanging[action] -= 1
                if abandoned:
                    log.warning(
                        "event_id=%s action=%s outcome=late_finish failed=%s reason=%r",
                        quoted(event_id),
                        action,
                        bool(failure),
                        "an attempt given up after its timeout ended later; the "
                        "target may receive this delivery twice",
                    )

        caller = self._caller()
        caller.run(run)
        if not finished.wait(timeout):
            with self._lock:
                if not finished.is_set():
                    abandoned = True
                    self._hanging[action] = self._hanging.get(action, 0) + 1
            if abandoned:
                # The hung call keeps its thread, which ends after it.
                self._local.caller = None
                caller.retire()
                raise RetryableError(
                    f"the `{plugin}` plugin did not finish within {timeout:g}s"
                )
        if failure:
            raise failure[0]

    def retire_all(self) -> None:
        """End every caller thread once its current call, if any, returns."""
        with self._lock:
            for caller in self._callers:
                caller.retire()

    def _caller(self) -> _Caller:
        caller: _Caller | None = getattr(self._local, "caller", None)
        if caller is None:
            caller = self._local.caller = _Caller(threading.current_thread().name)
            with self._lock:
                self._callers.append(caller)
        return caller


class _Caller:
    """A thread making one worker's plugin calls, so no call needs a new thread."""

    def __init__(self, worker: str) -> None:
        self._inbox: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        thread = threading.Thread(target=self._loop, name=f"{worker}-call", daemon=True)
        thread.start()

    def run(self, fn: Callable[[], None]) -> None:
        """Start ``fn``; it must catch its own exceptions."""
        self._inbox.put(fn)

    def retire(self) -> None:
        """End the thread once the call it is making, if any, returns."""
        self._inbox.put(None)

    def _loop(self) -> None:
        while (fn := self._inbox.get()) is not None:
            fn()
