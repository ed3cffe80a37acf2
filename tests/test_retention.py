"""Retention: old events and finished deliveries go, work to do and recent rows stay."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import wait_until

from ovoko_relay.retention import DAY, Pruner, prune
from ovoko_relay.store import Store

NOW = time.time()


def age(days: float) -> float:
    return NOW - days * DAY


def add_event(store: Store, event_id: str, days_old: float, processed: bool) -> None:
    def insert(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO events (event_id, event_type, event_time, received_at, body,"
            " processed_at) VALUES (?, 'part.status.changed', '', ?, '{}', ?)",
            (event_id, age(days_old), age(days_old) if processed else None),
        )

    store.write(insert)


def add_delivery(store: Store, event_id: str, status: str, days_old: float) -> int:
    def insert(conn: sqlite3.Connection) -> int:
        cursor = conn.execute(
            "INSERT INTO deliveries (event_id, rule, step, action, plugin, status,"
            " attempts, due_at, created_at, updated_at, step_key)"
            " VALUES (?, 'r', (SELECT count(*) FROM deliveries), 'a', 'log', ?, 1,"
            " ?, ?, ?, (SELECT count(*) FROM deliveries))",
            (event_id, status, age(days_old), age(days_old), age(days_old)),
        )
        conn.execute(
            "INSERT INTO attempts (delivery_id, number, started_at, finished_at,"
            " outcome) VALUES (?, 1, ?, ?, 'done')",
            (cursor.lastrowid, age(days_old), age(days_old)),
        )
        return int(cursor.lastrowid or 0)

    return store.write(insert)


def ids(store: Store, table: str, column: str) -> set[str]:
    return {
        str(row[0])
        for row in store.reader().execute(f"SELECT {column} FROM {table}")  # noqa: S608
    }


@pytest.fixture
def store(tmp_path: Path):
    store = Store(str(tmp_path / "relay.sqlite3"))
    yield store
    store.close()


# (event, event age in days, processed, [(delivery status, its age in days)], kept)
CASES = [
    ("old-done", 100, True, [("done", 100)], False),
    ("old-no-rule", 100, True, [], False),
    ("recent-done", 10, True, [("done", 10)], True),
    ("old-event-recent-retry", 100, True, [("done", 100), ("done", 5)], True),
    ("old-pending", 100, True, [("pending", 100)], True),
    ("old-claimed", 100, True, [("claimed", 100)], True),
    ("old-dead", 100, True, [("dead", 100)], False),
    ("old-event-recently-dead", 100, True, [("dead", 30)], True),
    ("old-unprocessed", 100, False, [], True),
    ("just-inside", 89, True, [("done", 89)], True),
]


def test_prune_removes_rows_older_than_the_retention(store: Store) -> None:
    for event_id, days_old, processed, deliveries, _ in CASES:
        add_event(store, event_id, days_old, processed)
        for status, delivery_age in deliveries:
            add_delivery(store, event_id, status, delivery_age)

    events, deliveries = prune(store, days=90, now=NOW)

    kept = {event_id for event_id, *_, keep in CASES if keep}
    assert ids(store, "events", "event_id") == kept
    assert events == len(CASES) - len(kept)
    remaining = {
        (row[0], row[1])
        for row in store.reader().execute("SELECT event_id, status FROM deliveries")
    }
    assert ("old-done", "done") not in remaining
    assert ("old-dead", "dead") not in remaining
    assert ("old-event-recently-dead", "dead") in remaining
    assert ("old-pending", "pending") in remaining
    assert deliveries == 3  # old-done, the old half of old-event-recent-retry, old-dead
    orphans = store.reader().execute(
        "SELECT count(*) FROM attempts WHERE delivery_id NOT IN"
        " (SELECT id FROM deliveries)"
    )
    assert orphans.fetchone()[0] == 0


def test_prune_works_through_more_rows_than_one_batch(store: Store) -> None:
    def insert(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO events (event_id, event_type, event_time, received_at, body,"
            " processed_at) VALUES (?, 't', '', ?, '{}', ?)",
            [(f"e{n}", age(200), age(200)) for n in range(1234)],
        )

    store.write(insert)

    assert prune(store, days=90, now=NOW) == (1234, 0)
    assert store.count_events() == 0


def test_pruner_runs_at_start_with_the_configured_days(store: Store) -> None:
    add_event(store, "five-days-old", 5, True)
    add_event(store, "one-day-old", 1, True)
    pruned: list[tuple[int, int]] = []
    pruner = Pruner(store, lambda: 3, on_pruned=lambda e, d: pruned.append((e, d)))

    pruner.start()
    wait_until(lambda: pruned, timeout=5, interval=0.01)
    pruner.stop()

    assert pruned == [(1, 0)]
    assert ids(store, "events", "event_id") == {"one-day-old"}


@pytest.mark.e2e
def test_the_relay_prunes_when_it_starts(write_config, start_relay, tmp_path) -> None:
    store = Store(str(tmp_path / "data" / "relay.sqlite3"))
    add_event(store, "ancient", 400, True)
    add_event(store, "young", 2, True)
    store.close()
    path = write_config(
        """\
        auth: {tokens: ["${OVOKO_TOKEN}"]}
        storage: {path: ./data/relay.sqlite3, retention_days: 30}
        """
    )

    relay = start_relay(path)
    relay.wait_for_log(r"retention outcome=pruned days=30 events=1 deliveries=0")
    assert relay.stop() == 0

    conn = sqlite3.connect(tmp_path / "data" / "relay.sqlite3")
    assert [row[0] for row in conn.execute("SELECT event_id FROM events")] == ["young"]
    conn.close()
