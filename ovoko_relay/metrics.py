"""Prometheus counters and gauges describing the relay's work."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .store import DELIVERY_STATUSES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .store import Store

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# The `_created` series double the scrape and no dashboard of ours reads them.
disable_created_metrics()


class Metrics:
    """The relay's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "ovoko_relay_events_received",
            "Webhook events answered 2xx, by outcome (accepted or duplicate).",
            ["outcome"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "ovoko_relay_requests_rejected",
            "Webhook requests refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "ovoko_relay_delivery_attempts",
            "Delivery attempts, by plugin, action and outcome (done, retry, dead).",
            ["plugin", "action", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ovoko_relay_delivery_duration_seconds",
            "Seconds one delivery attempt took, by plugin.",
            ["plugin"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reloads = Counter(
            "ovoko_relay_config_reloads",
            "Config reloads asked for by SIGHUP, by outcome (applied or rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self.reload_success = Gauge(
            "ovoko_relay_config_last_reload_success",
            "1 if the last config reload was applied (or none was asked), 0 if it "
            "was rejected and the relay runs the previous config.",
            registry=self.registry,
        )
        self.reload_time = Gauge(
            "ovoko_relay_config_last_reload_timestamp_seconds",
            "When the config was last loaded or a reload was last tried (Unix time).",
            registry=self.registry,
        )
        self.pruned = Counter(
            "ovoko_relay_pruned_rows",
            "Rows removed by retention, by table.",
            ["table"],
            registry=self.registry,
        )
        self.reload_success.set(1)
        self.reload_time.set(time.time())

    def watch(self, store: Store, workers_alive: Callable[[], bool]) -> None:
        """Add the gauges read from the store and the workers at each scrape."""
        self.registry.register(_StateCollector(store, workers_alive))

    def event(self, outcome: str) -> None:
        """Count one event answered 2xx."""
        self.events.labels(outcome=outcome).inc()

    def rejected(self, reason: str) -> None:
        """Count one refused webhook request."""
        self.rejections.labels(reason=reason).inc()

    def attempt(self, plugin: str, action: str, outcome: str, seconds: float) -> None:
        """Count one delivery attempt and how long it took."""
        self.attempts.labels(plugin=plugin, action=action, outcome=outcome).inc()
        self.latency.labels(plugin=plugin).observe(seconds)

    def reloaded(self, applied: bool) -> None:
        """Record the outcome of one config reload."""
        self.reloads.labels(outcome="applied" if applied else "rejected").inc()
        self.reload_success.set(1 if applied else 0)
        self.reload_time.set(time.time())

    def render(self) -> tuple[str, bytes]:
        """Return the content type and body of a scrape."""
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


class _StateCollector(Collector):
    """Read the backlog from the store at scrape time, so it is never out of date."""

    def __init__(self, store: Store, workers_alive: Callable[[], bool]) -> None:
        self.store = store
        self.workers_alive = workers_alive

    def describe(self) -> list[Metric]:
        # NOTE: empty, so registering does not run a scrape against the store.
        return []

    def collect(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily(
            "ovoko_relay_workers_alive",
            "1 if the dispatcher and every delivery worker are running.",
        )
        workers.add_metric([], 1 if self.workers_alive() else 0)
        yield workers

        try:
            counts, oldest = self._read()
        except sqlite3.Error as exc:
            log.warning("metrics outcome=store_unreadable error=%r", str(exc))
            return
        deliveries = GaugeMetricFamily(
            "ovoko_relay_deliveries",
            "Deliveries now in the store, by status.",
            labels=["status"],
        )
        for status in DELIVERY_STATUSES:
            deliveries.add_metric([status], counts.get(status, 0))
        yield deliveries

        age = GaugeMetricFamily(
            "ovoko_relay_oldest_pending_delivery_age_seconds",
            "Seconds since the oldest delivery still waiting was created (0: none).",
        )
        age.add_metric([], max(0.0, time.time() - oldest) if oldest else 0.0)
        yield age

    def _read(self) -> tuple[dict[str, int], float | None]:
        conn = self.store.reader()
        counts = {
            row[0]: int(row[1])
            for row in conn.execute(
                "SELECT status, count(*) FROM deliveries GROUP BY status"
            )
        }
        oldest = conn.execute(
            "SELECT min(created_at) FROM deliveries"
            " WHERE status IN ('pending', 'claimed')"
        ).fetchone()[0]
        return counts, oldest
