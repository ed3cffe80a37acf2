"""Prometheus counters and gauges describing the relay's work."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


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

    def event(self, outcome: str) -> None:
        """Count one event answered 2xx."""
        self.events.labels(outcome=outcome).inc()

    def rejected(self, reason: str) -> None:
        """Count one refused webhook request."""
        self.rejections.labels(reason=reason).inc()

    def render(self) -> tuple[str, bytes]:
        """Return the content type and body of a scrape."""
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)
