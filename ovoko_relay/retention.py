"""Retention: remove events and finished deliveries older than the configured days.

A delivery still pending or claimed is never removed: it is work to do. A dead
delivery is kept for the same number of days counted from when it died (its
last attempt), so an operator has the whole retention window to replay it. An
event is removed only once it is older than the window, its rules have run,
and none of its deliveries is kept any more, since a replay needs its body.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from .errors import StoreError
from .store import Store

log = logging.getLogger(__name__)

DAY = 86400.0
BATCH = 500


def prune(store: Store, days: float, now: float | None = None) -> tuple[int, int]:
    """Remove what is older than ``days``; return (events, deliveries) removed."""
    cutoff = (time.time() if now is None else now) - days * DAY

    def deliveries(conn: sqlite3.Connection) -> int:
        ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM deliveries WHERE status IN ('done', 'dead')"
                " AND updated_at < ? LIMIT ?",
                (cutoff, BATCH),
            )
        ]
        marks = ",".join("?" * len(ids))
        conn.execute(f"DELETE FROM attempts WHERE delivery_id IN ({marks})", ids)  # noqa: S608 — only placeholders
        conn.execute(f"DELETE FROM deliveries WHERE id IN ({marks})", ids)  # noqa: S608 — only placeholders
        return len(ids)

    def events(conn: sqlite3.Connection) -> int:
        return conn.execute(
            "DELETE FROM events WHERE id IN (SELECT e.id FROM events e"
            " WHERE e.received_at < ? AND e.processed_at IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d"
            " WHERE d.event_id = e.event_id) LIMIT ?)",
            (cutoff, BATCH),
        ).rowcount

    # Small batches keep each write short, so webhooks never wait behind a prune.
    removed_deliveries = _repeat(store, deliveries)
    removed_events = _repeat(store, events)
    return removed_events, removed_deliveries


def _repeat(store: Store, step: Callable[[sqlite3.Connection], int]) -> int:
    total = 0
    while True:
        removed = store.write(step)
        total += removed
        if removed < BATCH:
            return total


class Pruner:
    """Prune at start and then once a day, in a thread of its own."""

    def __init__(
        self,
        store: Store,
        days: Callable[[], float],
        on_pruned: Callable[[int, int], None] | None = None,
        interval: float = DAY,
    ) -> None:
        self.store = store
        self.days = days
        self.on_pruned = on_pruned
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pruner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> tuple[int, int]:
        """Prune now with the configured retention; log and report what went."""
        days = self.days()
        started = time.monotonic()
        events, deliveries = prune(self.store, days)
        log.info(
            "retention outcome=pruned days=%g events=%d deliveries=%d duration_ms=%.1f",
            days,
            events,
            deliveries,
            (time.monotonic() - started) * 1000,
        )
        if self.on_pruned:
            self.on_pruned(events, deliveries)
        return events, deliveries

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except (StoreError, sqlite3.Error) as exc:
                log.warning("retention outcome=failed error=%r", str(exc))
            self._stop.wait(self.interval)
