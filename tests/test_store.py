"""The store's delivery queue: recording, claiming, finishing, releasing, replaying."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sample

from ovoko_relay.events import Event
from ovoko_relay.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(str(tmp_path / "relay.sqlite3"))
    yield opened
    opened.close()


def add(store: Store, event_id: str) -> Event:
    body = sample("part-sold")
    body["event_id"] = event_id
    event = Event.from_envelope(body)
    assert store.add_event(event, json.dumps(body))
    return event


def queue(store: Store, event_id: str, steps: int = 1) -> None:
    add(store, event_id)
    rows = [
        ("Part sold", step, f"action-{step}", "log", f"key-{step}")
        for step in range(steps)
    ]
    store.record_deliveries([(event_id, rows)])


def test_recording_deliveries_marks_the_events_processed_in_one_batch(
    store: Store,
) -> None:
    add(store, "e1")
    add(store, "e2")
    assert [e.event_id for e in store.unprocessed_events()] == ["e1", "e2"]

    store.record_deliveries(
        [("e1", [("R", 0, "a", "log", "ka"), ("R", 1, "b", "log", "kb")]), ("e2", [])]
    )
    store.record_deliveries([("e1", [("R", 0, "a", "log", "ka")])])

    assert store.unprocessed_events() == []
    assert [(d.event_id, d.step, d.status) for d in store.deliveries()] == [
        ("e1", 1, "pending"),
        ("e1", 0, "pending"),
    ]


def test_claim_takes_due_deliveries_oldest_first_and_only_once(store: Store) -> None:
    for number in range(5):
        queue(store, f"e{number}")

    first = store.claim_due(3)
    second = store.claim_due(3)

    assert [d.event_id for d in first] == ["e0", "e1", "e2"]
    assert [d.event_id for d in second] == ["e3", "e4"]
    assert all(d.status == "claimed" for d in first + second)
    assert store.claim_due(3) == []


def test_a_delivery_due_later_is_not_claimed_until_then(store: Store) -> None:
    queue(store, "e1")
    [delivery] = store.claim_due(1)
    later = time.time() + 0.3
    store.finish_attempt(delivery, time.time(), "retry", "503", due_at=later)

    assert store.claim_due(1) == []
    assert store.next_due_at() == pytest.approx(later)
    time.sleep(0.35)
    assert [d.attempts for d in store.claim_due(1)] == [1]


@pytest.mark.parametrize(
    ("outcome", "status"), [("done", "done"), ("retry", "pending"), ("dead", "dead")]
)
def test_finishing_an_attempt_records_it_and_moves_the_delivery(
    store: Store, outcome: str, status: str
) -> None:
    queue(store, "e1")
    [delivery] = store.claim_due(1)
    started = time.time()
    error = None if outcome == "done" else "the target answered 503"

    store.finish_attempt(delivery, started, outcome, error)

    [after] = store.deliveries()
    assert (after.status, after.attempts, after.last_error) == (status, 1, error)
    [attempt] = store.attempts(delivery.id)
    assert attempt["number"] == 1
    assert attempt["outcome"] == outcome
    assert attempt["error"] == error
    assert attempt["started_at"] == pytest.approx(started)
    assert attempt["finished_at"] >= attempt["started_at"]


def test_claims_left_by_a_crash_are_released_at_start(store: Store) -> None:
    queue(store, "e1")
    queue(store, "e2")
    store.claim_due(2)

    assert store.release_claims() == 2
    assert {d.status for d in store.deliveries()} == {"pending"}


def test_releasing_unstarted_claims_leaves_finished_ones_alone(store: Store) -> None:
    queue(store, "e1")
    queue(store, "e2")
    first, second = store.claim_due(2)
    store.finish_attempt(first, time.time(), "done", None)

    assert store.release([first.id, second.id]) == 1
    assert {d.event_id: d.status for d in store.deliveries()} == {
        "e1": "done",
        "e2": "pending",
    }


def test_replaying_an_event_requeues_all_its_deliveries_but_running_ones(
    store: Store,
) -> None:
    queue(store, "e1", steps=3)
    done, dead, running = store.claim_due(3)
    store.finish_attempt(done, time.time(), "done", None)
    store.finish_attempt(dead, time.time(), "dead", "400")

    result = store.replay_event("e1")

    assert (result.queued, result.running, result.rematched) == (2, 1, False)
    states = {d.id: (d.status, d.attempts) for d in store.deliveries()}
    assert states == {
        done.id: ("pending", 0),
        dead.id: ("pending", 0),
        running.id: ("claimed", 0),
    }


def test_attempts_keep_their_numbers_across_a_replay(store: Store) -> None:
    queue(store, "e1")
    [delivery] = store.claim_due(1)
    store.finish_attempt(delivery, time.time(), "dead", "400")
    store.replay_dead()
    [again] = store.claim_due(1)
    assert again.attempts == 0  # a replay gives a fresh set of attempts

    store.finish_attempt(again, time.time(), "done", None)

    assert [a["number"] for a in store.attempts(delivery.id)] == [1, 2]
    assert [a["outcome"] for a in store.attempts(delivery.id)] == ["dead", "done"]


def test_replaying_an_event_without_deliveries_runs_the_rules_again(
    store: Store,
) -> None:
    add(store, "e1")
    store.record_deliveries([("e1", [])])

    result = store.replay_event("e1")

    assert result.rematched
    assert [e.event_id for e in store.unprocessed_events()] == ["e1"]


def test_rematching_an_event_keeps_its_done_and_running_deliveries_only(
    store: Store,
) -> None:
    queue(store, "e1", steps=4)
    queue(store, "e2")
    done, dead, running, pending, other = store.claim_due(5)
    store.finish_attempt(done, time.time(), "done", None)
    store.finish_attempt(dead, time.time(), "dead", "400")
    store.release([pending.id])

    result = store.rematch_event("e1")

    assert (result.removed, result.done, result.running) == (2, 1, 1)
    assert store.attempts(dead.id) == []  # a new delivery may take its id
    assert {d.id: d.status for d in store.deliveries()} == {
        done.id: "done",
        running.id: "claimed",
        other.id: "claimed",
    }
    assert [e.event_id for e in store.unprocessed_events()] == ["e1"]

    # The current rules run step 0 again and a renamed rule: step 0 stays done.
    rows = [
        ("Part sold", 0, "action-0", "log", "key-0"),
        ("Renamed", 0, "action-0", "log", "key-0"),
    ]
    store.record_deliveries([("e1", rows)])

    assert store.unprocessed_events() == []
    kept = store.deliveries(event_id="e1")
    assert sorted((d.rule, d.step, d.status) for d in kept) == [
        ("Part sold", 0, "done"),
        ("Part sold", 2, "claimed"),
        ("Renamed", 0, "pending"),
    ]


def test_replay_dead_touches_only_dead_deliveries(store: Store) -> None:
    for number in range(3):
        queue(store, f"e{number}")
    a, b, c = store.claim_due(3)
    store.finish_attempt(a, time.time(), "dead", "x")
    store.finish_attempt(b, time.time(), "done", None)

    assert store.replay_dead() == 1
    assert {d.event_id: d.status for d in store.deliveries()} == {
        "e0": "pending",
        "e1": "done",
        "e2": "claimed",
    }
    assert store.replay_dead() == 0


@pytest.mark.parametrize(
    ("status", "event_id", "expected"),
    [
        (None, None, 4),
        ("pending", None, 3),
        ("dead", None, 1),
        (None, "e2", 2),
        ("pending", "e2", 2),
        ("dead", "e2", 0),
        ("done", None, 0),
    ],
)
def test_listing_filters_by_status_and_event(
    store: Store, status: str | None, event_id: str | None, expected: int
) -> None:
    queue(store, "e1", steps=2)
    queue(store, "e2", steps=2)
    [first] = store.claim_due(1)
    store.finish_attempt(first, time.time(), "dead", "x")
    store.release_claims()

    listed = store.deliveries(status=status, event_id=event_id)
    assert len(listed) == store.count_deliveries(status, event_id) == expected
    assert [d.id for d in listed] == sorted((d.id for d in listed), reverse=True)


def test_event_lookup_for_the_commands(store: Store) -> None:
    add(store, "evt-1")
    add(store, "evt-2")
    assert store.has_event("evt-1")
    assert not store.has_event("evt-3")
    assert store.recent_event_ids() == ["evt-2", "evt-1"]
