"""What the operator commands print: deliveries, replays and installed plugins."""

from __future__ import annotations

import difflib
import os
import time
from collections.abc import Sequence
from typing import TextIO

from . import plugins as plugin_registry
from .dispatch import find_step
from .errors import NotFoundError
from .rules import Rule
from .store import Delivery, Store

ERROR_WIDTH = 70
CELL_WIDTH = 36
PICKUP = (
    "The running relay sends them within about a second; if it is not running, "
    "they go when it next starts."
)
PICKUP_REMATCH = PICKUP.replace("sends them", "does this")


def open_store(path: str) -> Store:
    """Open an existing store; say plainly when there is none yet."""
    if not os.path.exists(path):
        raise NotFoundError(
            f"there is no database at {path} yet: the relay has not stored any "
            "event there (check `storage.path` in the config)"
        )
    return Store(path)


def print_deliveries(
    store: Store,
    out: TextIO,
    status: str | None = None,
    event_id: str | None = None,
    limit: int = 50,
) -> None:
    """Print a table of deliveries, newest first; with an event, every attempt."""
    if event_id is not None:
        require_event(store, event_id)
    shown = store.deliveries(status=status, event_id=event_id, limit=limit)
    total = store.count_deliveries(status=status, event_id=event_id)
    if not shown:
        print(f"No deliveries{_filter_text(status, event_id)}.", file=out)
        return

    now = time.time()
    rows = [
        (
            str(d.id),
            d.event_id,
            d.rule,
            d.action,
            d.status,
            str(d.attempts),
            _next_due(d, now),
            _one_line(d.last_error or "-", ERROR_WIDTH),
        )
        for d in shown
    ]
    header = ("ID", "EVENT", "RULE", "ACTION", "STATUS", "ATTEMPTS", "NEXT DUE")
    print(_table((*header, "LAST ERROR"), rows), file=out)
    if total > len(shown):
        print(
            f"\nShowing the newest {len(shown)} of {total} deliveries"
            f"{_filter_text(status, event_id)}; use --limit to see more.",
            file=out,
        )
    if event_id is not None:
        for delivery in shown:
            _print_attempts(store, delivery, out)


def require_event(store: Store, event_id: str) -> None:
    """Raise NotFoundError, with a close id if there is one, unless it is stored."""
    if store.has_event(event_id):
        return
    close = difflib.get_close_matches(event_id, store.recent_event_ids(), n=1)
    hint = f" — did you mean `{close[0]}`?" if close else ""
    raise NotFoundError(
        f"no event with id `{event_id}` is stored in {store.path}{hint}"
    )


def replay_event(
    store: Store, event_id: str, out: TextIO, rules: Sequence[Rule] | None = None
) -> None:
    """Queue every delivery of one event again and say how many.

    Given the current ``rules``, also name the deliveries they no longer run.
    """
    require_event(store, event_id)
    result = store.replay_event(event_id)
    if result.rematched:
        print(
            f"Event {event_id} has no deliveries: it will be matched against the "
            "rules again, and each action a rule chooses is delivered. "
            + PICKUP_REMATCH,
            file=out,
        )
        return
    if result.queued:
        print(
            f"Queued {_count(result.queued, 'delivery', 'deliveries')} of event "
            f"{event_id} again. {PICKUP}",
            file=out,
        )
    if result.running:
        print(
            f"{_count(result.running, 'delivery', 'deliveries')} of event {event_id} "
            f"{_left_running(result.running)}",
            file=out,
        )
    if rules is not None:
        _warn_stale(store, event_id, rules, out)


def _warn_stale(
    store: Store, event_id: str, rules: Sequence[Rule], out: TextIO
) -> None:
    by_name = {rule.name: rule for rule in rules}
    stale = [
        d
        for d in store.deliveries(event_id=event_id)
        if find_step(by_name.get(d.rule), d.step, d.action, d.step_key) is None
    ]
    if not stale:
        return
    names = ", ".join(f"`{d.rule}` → {d.action}" for d in reversed(stale))
    print(
        f"Warning: {_count(len(stale), 'delivery', 'deliveries')} of event "
        f"{event_id} ({names}) will fail again: {'its' if len(stale) == 1 else 'their'}"
        " rule or action is no longer in the current config. To run the current "
        f"rules on this event instead, use `ovoko-relay replay --rematch {event_id}`.",
        file=out,
    )


def rematch_event(store: Store, event_id: str, out: TextIO) -> None:
    """Hand one event to the current rules again and say what was kept."""
    require_event(store, event_id)
    result = store.rematch_event(event_id)
    lines = [
        f"Event {event_id} will be matched against the current rules again, and "
        "each action they choose is delivered. " + PICKUP_REMATCH
    ]
    if result.removed:
        lines.append(
            f"Removed {_count(result.removed, 'delivery', 'deliveries')} that had "
            "not succeeded (pending or dead), with "
            f"{'its' if result.removed == 1 else 'their'} attempt history."
        )
    if result.done:
        lines.append(
            f"Kept {_count(result.done, 'done delivery', 'done deliveries')}: "
            "a rule and step that already delivered this event do not send it again."
        )
    if result.running:
        lines.append(
            f"{_count(result.running, 'delivery', 'deliveries')} "
            f"{_left_running(result.running)}"
        )
    print("\n".join(lines), file=out)


def replay_dead(store: Store, out: TextIO) -> None:
    """Queue every dead delivery again and say how many."""
    queued = store.replay_dead()
    if not queued:
        print("No dead deliveries: nothing to replay.", file=out)
        return
    print(
        f"Queued {_count(queued, 'dead delivery', 'dead deliveries')} again. {PICKUP}",
        file=out,
    )


def print_plugins(out: TextIO) -> None:
    """Print every installed plugin: version, distribution, source and state."""
    found = plugin_registry.installed()
    if not found:
        print(
            f"No plugins are installed (entry-point group {plugin_registry.GROUP}).",
            file=out,
        )
        return
    rows = [
        (
            info.name,
            info.version,
            info.distribution,
            info.target,
            "ok" if info.cls is not None else f"unusable: {info.error}",
        )
        for info in sorted(found.values(), key=lambda i: i.name)
    ]
    header = ("PLUGIN", "VERSION", "DISTRIBUTION", "SOURCE", "STATE")
    print(_table(header, rows, width=80), file=out)


def _print_attempts(store: Store, delivery: Delivery, out: TextIO) -> None:
    attempts = store.attempts(delivery.id)
    print(
        f"\nDelivery {delivery.id} ({delivery.rule} → {delivery.action}): "
        f"{_count(len(attempts), 'attempt', 'attempts')}",
        file=out,
    )
    for attempt in attempts:
        stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(attempt["started_at"]))
        took = (attempt["finished_at"] - attempt["started_at"]) * 1000
        line = (
            f"  #{attempt['number']}  {stamp}  {attempt['outcome']:<5}  {took:.0f} ms"
        )
        if attempt["error"]:
            line += f"  {_one_line(attempt['error'], 200)}"
        print(line, file=out)


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], width: int = CELL_WIDTH
) -> str:
    cells = [[_one_line(c, width) for c in row[:-1]] + [row[-1]] for row in rows]
    widths = [
        max(len(header[i]), *(len(row[i]) for row in cells))
        for i in range(len(header) - 1)
    ]
    lines = []
    for row in (list(header), *cells):
        padded = [cell.ljust(size) for cell, size in zip(row, widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def _next_due(delivery: Delivery, now: float) -> str:
    if delivery.status == "claimed":
        return "running"
    if delivery.status != "pending":
        return "-"
    wait = delivery.due_at - now
    if wait <= 0:
        return "now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if wait >= size:
            return f"in {wait / size:.0f}{unit}"
    return f"in {wait:.0f}s"


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _left_running(number: int) -> str:
    if number == 1:
        return "is being attempted right now and left as it is."
    return "are being attempted right now and left as they are."


def _filter_text(status: str | None, event_id: str | None) -> str:
    parts = []
    if status:
        parts.append(f"with status {status}")
    if event_id:
        parts.append(f"for event {event_id}")
    return (" " + " ".join(parts)) if parts else ""
