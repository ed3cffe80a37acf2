"""GET /metrics after a known sequence of requests: every series has its value."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from conftest import sample, wait_until
from prometheus_client.parser import text_string_to_metric_families

CONFIG = """\
auth: {tokens: ["${OVOKO_TOKEN}"]}
storage: {path: ./data/relay.sqlite3}
actions:
  office-log: {plugin: log}
  broken-sheet:
    plugin: spreadsheet
    path: ./blocker/broken.csv
    retry: {attempts: 1}
  later-sheet:
    plugin: spreadsheet
    path: ./blocker/later.csv
    retry: {attempts: 5, first_delay: 1h}
rules:
  - name: Sold
    when: {status: [sold, sold_in_ebay]}
    do:
      - {action: office-log, message: "sold {{ data.part_id }}"}
      - action: broken-sheet
        columns: {Part: "{{ data.part_id }}"}
      - action: later-sheet
        columns: {Part: "{{ data.part_id }}"}
  - name: Reserved
    when: {status: reserved}
    do:
      - {action: office-log, message: "reserved {{ data.part_id }}"}
"""


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def value(values: dict, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def attempts_made(values: dict) -> float:
    return sum(v for (name, _), v in values.items() if name.endswith("attempts_total"))


@pytest.mark.e2e
def test_metrics_count_a_known_sequence(
    write_config, start_relay, tmp_path: Path
) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be\n")
    relay = start_relay(write_config(CONFIG))

    for name in ("part-sold", "part-sold-in-ebay", "part-reserved", "part-returned"):
        assert relay.post(sample(name)).status_code == 200
    for _ in range(2):
        assert relay.post(sample("part-sold")).json()["status"] == "duplicate"
    assert relay.post(sample("part-sold"), token="wrong").status_code == 401
    assert relay.post(b"{not json").status_code == 400
    text = relay.post(b"{}", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415

    values = wait_until(
        lambda: (v := scrape(relay.url)) and attempts_made(v) == 7 and v, timeout=15
    )

    assert value(values, "ovoko_relay_events_received_total", outcome="accepted") == 4
    assert value(values, "ovoko_relay_events_received_total", outcome="duplicate") == 2
    for reason in ("unauthorized", "invalid_body", "unsupported_media_type"):
        assert value(values, "ovoko_relay_requests_rejected_total", reason=reason) == 1

    attempts = "ovoko_relay_delivery_attempts_total"
    assert (
        value(values, attempts, plugin="log", action="office-log", outcome="done") == 3
    )
    assert (
        value(
            values,
            attempts,
            plugin="spreadsheet",
            action="broken-sheet",
            outcome="dead",
        )
        == 2
    )
    assert (
        value(
            values,
            attempts,
            plugin="spreadsheet",
            action="later-sheet",
            outcome="retry",
        )
        == 2
    )

    latency = "ovoko_relay_delivery_duration_seconds"
    assert value(values, latency + "_count", plugin="log") == 3
    assert value(values, latency + "_count", plugin="spreadsheet") == 4
    assert value(values, latency + "_bucket", plugin="log", le="+Inf") == 3
    assert 0 < value(values, latency + "_sum", plugin="log") < 3 * 5

    assert value(values, "ovoko_relay_deliveries", status="done") == 3
    assert value(values, "ovoko_relay_deliveries", status="dead") == 2
    assert value(values, "ovoko_relay_deliveries", status="pending") == 2
    assert value(values, "ovoko_relay_deliveries", status="claimed") == 0
    assert value(values, "ovoko_relay_workers_alive") == 1
    assert value(values, "ovoko_relay_config_last_reload_success") == 1

    # The age is computed at each scrape, so it grows while the retry waits.
    first = value(values, "ovoko_relay_oldest_pending_delivery_age_seconds")
    time.sleep(0.3)
    later = value(scrape(relay.url), "ovoko_relay_oldest_pending_delivery_age_seconds")
    assert 0 < first < 60
    assert later >= first + 0.25
    assert relay.stop() == 0


@pytest.mark.e2e
def test_metrics_show_an_empty_backlog_on_a_fresh_relay(
    write_config, start_relay
) -> None:
    relay = start_relay(write_config(CONFIG))

    values = scrape(relay.url)

    assert value(values, "ovoko_relay_deliveries", status="pending") == 0
    assert value(values, "ovoko_relay_oldest_pending_delivery_age_seconds") == 0
    assert value(values, "ovoko_relay_events_received_total", outcome="accepted") == 0
    assert relay.stop() == 0
