"""SQLite persistence: events, deliveries and their attempts, written by one thread.

Every write goes through :class:`Store.write`, which hands a function to the
writer thread. The writer runs the functions that arrive together inside one
transaction (each in its own savepoint, so one failure spoils no other) and
commits once: one fsync serves many webhook requests. A caller is answered
only after the commit that holds its write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import StoreError
from .events import Event

log = logging.getLogger(__name__)

T = TypeVar("T")
# One delivery to record: rule, step index, action, plugin, step key.
Row = tuple[str, int, str, str, str]

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    event_type   TEXT NOT NULL,
    event_time   TEXT NOT NULL,
    received_at  REAL NOT NULL,
    body         TEXT NOT NULL,
    processed_at REAL
);
CREATE INDEX IF NOT EXISTS events_unprocessed ON events (id)
    WHERE processed_at IS NULL;
CREATE INDEX IF NOT EXISTS events_received ON events (received_at);

CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    event_id    TEXT NOT NULL,
    rule        TEXT NOT NULL,
    step        INTEGER NOT NULL,
    action      TEXT NOT NULL,
    plugin      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'claimed', 'done', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    due_at      REAL NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    last_error  TEXT,
    step_key    TEXT NOT NULL DEFAULT '',
    UNIQUE (event_id, rule, step_key)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (due_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries (status, updated_at);

CREATE TABLE IF NOT EXISTS attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL,
    number      INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (delivery_id);

CREATE TABLE IF NOT EXISTS health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at REAL NOT NULL
);
"""

# How long a caller waits beyond write_timeout for a commit already under way.
COMMIT_BOUND_SECONDS = 10.0

INSERT_EVENTS = (
    "INSERT OR IGNORE INTO events"
    " (event_id, event_type, event_time, received_at, body)"
    " VALUES {placeholders} RETURNING event_id"
)

DELIVERY_STATUSES = ("pending", "claimed", "done", "dead")


@dataclass(frozen=True)
class Delivery:
    """One (event, rule, step) to deliver, as stored."""

    id: int
    event_id: str
    rule: str
    step: int
    action: str
    plugin: str
    status: str
    attempts: int
    due_at: float
    created_at: float
    updated_at: float
    last_error: str | None
    step_key: str = ""


class _Job:
    """A write waiting for its commit; ``done`` is released once it is over.

    A job either runs ``fn`` or, when ``row`` is given, inserts one event row;
    the writer inserts all the event rows of a batch in one statement.
    """

    __slots__ = ("fn", "row", "done", "result", "error", "state")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any] | None,
        row: tuple[str, str, str, float, str] | None = None,
    ) -> None:
        self.fn = fn
        self.row = row
        # PERF: a bare lock, held until the commit, wakes the waiting request
        # with less work than a threading.Event would.
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None
        # queued -> taken (by the writer) or cancelled (by a caller that gave
        # up waiting): a write that timed out is never committed later.
        self.state = "queued"


def connect(path: str, timeout: float = 2.0) -> sqlite3.Connection:
    """Open the database in WAL mode with fsync on every commit."""
    conn = sqlite3.connect(
        path, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


class Store:
    """The relay's durable state, safe to use from many threads."""

    def __init__(self, path: str, write_timeout: float = 5.0) -> None:
        self.path = path
        self.write_timeout = write_timeout
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._states = threading.Lock()
        self._local = threading.local()

        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            self._writer_conn = connect(path)
            self._writer_conn.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        self._thread = threading.Thread(
            target=self._write_loop, name="store-writer", daemon=True
        )
        self._thread.start()

    # -- writing --------------------------------------------------------------

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer thread; return once its result is committed.

        ``fn`` may run more than once (its transaction rolled back in between),
        so it must do nothing but database work.
        """
        return self._submit(_Job(fn))  # type: ignore[no-any-return]

    def _submit(self, job: _Job) -> Any:
        self._jobs.put(job)
        if not job.done.acquire(timeout=self.write_timeout):
            with self._states:
                cancelled = job.state == "queued"
                job.state = "cancelled" if cancelled else job.state
            # Once taken, the commit under way decides; SQLite's busy timeout
            # bounds it.
            if cancelled or not job.done.acquire(timeout=COMMIT_BOUND_SECONDS):
                raise StoreError(
                    f"the database did not commit within {self.write_timeout:g}s"
                )
        if job.error is not None:
            raise StoreError(f"the database refused the write: {job.error}") from (
                job.error
            )
        return job.result

    def _write_loop(self) -> None:
        conn = self._writer_conn
        while True:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < 512:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)
                    break
                batch.append(job)
            with self._states:
                batch = [job for job in batch if job.state == "queued"]
                for job in batch:
                    job.state = "taken"
            if batch:
                self._commit_batch(conn, batch)
        conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        try:
            try:
                self._run_batch(conn, batch, isolate=False)
            except _JobFailed:
                # PERF: savepoints cost two statements a job, so they are only
                # paid for on the rare batch in which some job fails.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._run_batch(conn, batch, isolate=True)
        except Exception as exc:  # noqa: BLE001 — the writer must outlive any batch
            log.error("store outcome=commit_failed error=%r", str(exc))
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            for job in batch:
                job.error = exc
        for job in batch:
            job.done.release()

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[_Job], isolate: bool
    ) -> None:
        if isolate:
            self._run_isolated(conn, batch)
            return
        # PERF: webhooks alone need no BEGIN and COMMIT round trips: their one
        # INSERT statement is a transaction of its own.
        webhooks_only = all(job.fn is None for job in batch)
        try:
            if not webhooks_only:
                conn.execute("BEGIN IMMEDIATE")
            inserts = [job for job in batch if job.row is not None]
            if inserts:
                _insert_events(conn, inserts)
            for job in batch:
                if job.fn is not None:
                    job.result = job.fn(conn)
        except Exception as exc:  # noqa: BLE001 — retried in isolation
            raise _JobFailed from exc
        if conn.in_transaction:
            conn.execute("COMMIT")

    def _run_isolated(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Run each job in a savepoint of its own, so a failure spoils no other."""
        conn.execute("BEGIN IMMEDIATE")
        for job in batch:
            job.error = None
            conn.execute("SAVEPOINT job")
            try:
                if job.fn is not None:
                    job.result = job.fn(conn)
                else:
                    _insert_events(conn, [job])
                conn.execute("RELEASE job")
            except Exception as exc:  # noqa: BLE001 — reported to its caller
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                job.error = exc
        conn.execute("COMMIT")

    def close(self) -> None:
        """Finish queued writes and close the writer."""
        self._jobs.put(None)
        self._thread.join(timeout=10)

    # -- reading --------------------------------------------------------------

    def reader(self) -> sqlite3.Connection:
        """Return this thread's read connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        return conn

    # -- events ---------------------------------------------------------------

    def add_event(self, event: Event, body: str) -> bool:
        """Store an event durably; return False if its event_id was already kept."""
        row = (event.event_id, event.event_type, event.timestamp, time.time(), body)
        return bool(self._submit(_Job(None, row)))

    def get_event(self, event_id: str) -> Event | None:
        """Return a stored event by its event_id, or None."""
        row = (
            self.reader()
            .execute("SELECT body FROM events WHERE event_id = ?", (event_id,))
            .fetchone()
        )
        return _event(row["body"]) if row else None

    def unprocessed_events(self, limit: int = 100) -> list[Event]:
        """Return stored events whose rules have not been run yet, oldest first."""
        rows = self.reader().execute(
            "SELECT body FROM events WHERE processed_at IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [_event(row["body"]) for row in rows]

    def count_events(self) -> int:
        """Return how many events are stored."""
        return int(self.reader().execute("SELECT count(*) FROM events").fetchone()[0])

    def is_writable(self) -> bool:
        """Tell whether a write commits right now, by committing a real one.

        The database file itself must be writable too: in WAL mode a commit
        lands in the -wal file, and a file that cannot take the checkpoint
        would fail later.
        """

        def touch(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)",
                (time.time(),),
            )

        try:
            self.write(touch)
        except StoreError:
            return False
        return os.access(self.path, os.W_OK)

    # -- deliveries -----------------------------------------------------------

    def record_deliveries(self, batch: Sequence[tuple[str, Sequence[Row]]]) -> None:
        """Store each event's deliveries, and mark each event as matched.

        One commit serves the whole batch; a delivery already stored for the
        same (event, rule, step key) is kept as it is.
        """

        def record(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.executemany(
                "INSERT OR IGNORE INTO deliveries (event_id, rule, step, action,"
                " plugin, step_key, status, due_at, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                [
                    (event_id, rule, step, action, plugin, key, now, now, now)
                    for event_id, rows in batch
                    for rule, step, action, plugin, key in rows
                ],
            )
            conn.executemany(
                "UPDATE events SET processed_at = ? WHERE event_id = ?",
                [(now, event_id) for event_id, _ in batch],
            )

        self.write(record)

    def claim_due(self, limit: int = 1) -> list[Delivery]:
        """Claim up to ``limit`` pending deliveries that are due, soonest first."""

        def claim(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(
                "UPDATE deliveries SET status = 'claimed', updated_at = ?1"
                " WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending'"
                " AND due_at <= ?1 ORDER BY due_at, id LIMIT ?2)"
                " RETURNING *",
                (time.time(), limit),
            ).fetchall()
            return [Delivery(**dict(row)) for row in rows]

        claimed = self.write(claim)
        return sorted(claimed, key=lambda d: (d.due_at, d.id))

    def next_due_at(self) -> float | None:
        """Return when the earliest pending delivery falls due, or None."""
        row = (
            self.reader()
            .execute("SELECT min(due_at) FROM deliveries WHERE status = 'pending'")
            .fetchone()
        )
        return row[0]

    def finish_attempt(
        self,
        delivery: Delivery,
        started_at: float,
        outcome: str,
        error: str | None,
        due_at: float | None = None,
    ) -> None:
        """Record one attempt and move the delivery to done, pending or dead."""
        status = {"done": "done", "retry": "pending", "dead": "dead"}[outcome]

        def record(conn: sqlite3.Connection) -> None:
            now = time.time()
            # Numbered across replays, which start each delivery's count afresh.
            conn.execute(
                "INSERT INTO attempts (delivery_id, number, started_at, finished_at,"
                " outcome, error) SELECT ?1, coalesce(max(number), 0) + 1, ?2, ?3,"
                " ?4, ?5 FROM attempts WHERE delivery_id = ?1",
                (delivery.id, started_at, now, outcome, error),
            )
            conn.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1,"
                " due_at = ?, updated_at = ?, last_error = ? WHERE id = ?",
                (status, due_at or now, now, error, delivery.id),
            )

        self.write(record)

    def release_claims(self) -> int:
        """Return every claimed delivery to pending (at start, after a stop)."""

        def release(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE deliveries SET status = 'pending', updated_at = ?"
                " WHERE status = 'claimed'",
                (time.time(),),
            ).rowcount

        return self.write(release)

    def release(self, ids: Sequence[int]) -> int:
        """Return these claimed deliveries to pending, unattempted."""

        def release(conn: sqlite3.Connection) -> int:
            now = time.time()
            return sum(
                conn.execute(
                    "UPDATE deliveries SET status = 'pending', updated_at = ?"
                    " WHERE id = ? AND status = 'claimed'",
                    (now, delivery_id),
                ).rowcount
                for delivery_id in ids
            )

        return self.write(release)

    def deliveries(
        self, status: str | None = None, event_id: str | None = None, limit: int = 1000
    ) -> list[Delivery]:
        """List deliveries, newest first, filtered by status and event."""
        where, args = _delivery_filter(status, event_id)
        rows = self.reader().execute(
            f"SELECT * FROM deliveries{where} ORDER BY id DESC LIMIT ?",  # noqa: S608 — fixed clauses
            (*args, limit),
        )
        return [Delivery(**dict(row)) for row in rows.fetchall()]

    def count_deliveries(
        self, status: str | None = None, event_id: str | None = None
    ) -> int:
        """Count deliveries, filtered by status and event."""
        where, args = _delivery_filter(status, event_id)
        sql = f"SELECT count(*) FROM deliveries{where}"  # noqa: S608 — fixed clauses
        return int(self.reader().execute(sql, args).fetchone()[0])

    def attempts(self, delivery_id: int) -> list[sqlite3.Row]:
        """Return the attempts of one delivery, oldest first."""
        return (
            self.reader()
            .execute(
                "SELECT * FROM attempts WHERE delivery_id = ? ORDER BY number",
                (delivery_id,),
            )
            .fetchall()
        )

    def has_event(self, event_id: str) -> bool:
        """Tell whether an event with this event_id is stored."""
        row = (
            self.reader()
            .execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,))
            .fetchone()
        )
        return row is not None

    def recent_event_ids(self, limit: int = 5000) -> list[str]:
        """Return the event_ids of the newest stored events."""
        rows = self.reader().execute(
            "SELECT event_id FROM events ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [row[0] for row in rows.fetchall()]

    def replay_event(self, event_id: str) -> Replay:
        """Make an event's deliveries due now, each with a fresh set of attempts.

        Deliveries being attempted right now are left alone. An event with no
        deliveries at all is handed to the rules again.
        """

        def replay(conn: sqlite3.Connection) -> Replay:
            now = time.time()
            queued = conn.execute(
                "UPDATE deliveries SET status = 'pending', due_at = ?, attempts = 0,"
                " updated_at = ? WHERE event_id = ? AND status != 'claimed'",
                (now, now, event_id),
            ).rowcount
            running = conn.execute(
                "SELECT count(*) FROM deliveries WHERE event_id = ?"
                " AND status = 'claimed'",
                (event_id,),
            ).fetchone()[0]
            rematched = False
            if queued == 0 and running == 0:
                rematched = (
                    conn.execute(
                        "UPDATE events SET processed_at = NULL WHERE event_id = ?",
                        (event_id,),
                    ).rowcount
                    == 1
                )
            return Replay(queued, int(running), rematched)

        return self.write(replay)

    def replay_dead(self) -> int:
        """Make every dead delivery due now, each with a fresh set of attempts."""

        def replay(conn: sqlite3.Connection) -> int:
            now = time.time()
            return conn.execute(
                "UPDATE deliveries SET status = 'pending', due_at = ?, attempts = 0,"
                " updated_at = ? WHERE status = 'dead'",
                (now, now),
            ).rowcount

        return self.write(replay)

    def rematch_event(self, event_id: str) -> Rematch:
        """Hand an event to the current rules again, keeping what already went.

        Its deliveries that are neither done nor being attempted are removed
        with their attempts (a new delivery may take a removed one's id); the
        dispatcher then records the current rules' deliveries, and a done one
        for the same rule and step stays as it is.
        """

        def rematch(conn: sqlite3.Connection) -> Rematch:
            conn.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
                " WHERE event_id = ? AND status NOT IN ('done', 'claimed'))",
                (event_id,),
            )
            removed = conn.execute(
                "DELETE FROM deliveries WHERE event_id = ?"
                " AND status NOT IN ('done', 'claimed')",
                (event_id,),
            ).rowcount
            counts = dict(
                conn.execute(
                    "SELECT status, count(*) FROM deliveries WHERE event_id = ?"
                    " GROUP BY status",
                    (event_id,),
                ).fetchall()
            )
            conn.execute(
                "UPDATE events SET processed_at = NULL WHERE event_id = ?",
                (event_id,),
            )
            return Rematch(removed, counts.get("done", 0), counts.get("claimed", 0))

        return self.write(rematch)


@dataclass(frozen=True)
class Replay:
    """What a replay of one event queued."""

    queued: int
    running: int
    rematched: bool


@dataclass(frozen=True)
class Rematch:
    """What handing one event to the current rules again removed and kept."""

    removed: int
    done: int
    running: int


def _delivery_filter(
    status: str | None, event_id: str | None
) -> tuple[str, tuple[str, ...]]:
    where, args = [], []
    if status:
        where.append("status = ?")
        args.append(status)
    if event_id:
        where.append("event_id = ?")
        args.append(event_id)
    return (" WHERE " + " AND ".join(where) if where else ""), tuple(args)


class _JobFailed(Exception):
    """A job raised inside a batch run without savepoints."""


def _insert_events(conn: sqlite3.Connection, jobs: list[_Job]) -> None:
    """Insert the event rows of ``jobs`` in one statement; mark which were new."""
    placeholders = ", ".join(["(?, ?, ?, ?, ?)"] * len(jobs))
    sql = INSERT_EVENTS.format(placeholders=placeholders)
    params = [value for job in jobs for value in job.row]  # type: ignore[union-attr]
    inserted = {row[0] for row in conn.execute(sql, params)}
    for job in jobs:
        event_id = job.row[0]  # type: ignore[index]
        # A second copy of one event in the same batch is a duplicate.
        job.result = event_id in inserted
        inserted.discard(event_id)


def _event(body: str) -> Event:
    return Event.from_envelope(json.loads(body), body)
