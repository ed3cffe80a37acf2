"""The Ovoko event envelope: parse a webhook body and check its shape."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Deeper than any real event; far from what would exhaust Python's stack.
MAX_DEPTH = 32
# Control characters (C0, DEL, C1) and the line and paragraph separators.
_BREAKING = ("Cc", "Zl", "Zp")


class EnvelopeError(ValueError):
    """The body is not a valid Ovoko event; ``status`` is the HTTP answer."""

    def __init__(self, status: int, title: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.title = title
        self.description = description


@dataclass(frozen=True)
class Event:
    """One Ovoko event as received: the envelope fields and the raw body.

    ``body`` is the JSON text exactly as Ovoko sent it ("" for an event built
    from a mapping, as in the office's tests).
    """

    event_id: str
    event_type: str
    timestamp: str
    data: dict[str, Any]
    envelope: dict[str, Any]
    body: str = ""

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any], body: str = "") -> Event:
        """Build an event from an already-validated envelope."""
        return cls(
            event_id=envelope["event_id"],
            event_type=envelope["event_type"],
            timestamp=envelope["timestamp"],
            data=envelope["event_data"],
            envelope=envelope,
            body=body,
        )


def parse_body(body: bytes) -> Event:
    """Parse and validate a webhook body, raising EnvelopeError naming the problem."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(
            400,
            "Body is not UTF-8",
            f"The request body is not valid UTF-8 (byte {exc.start}).",
        ) from None
    try:
        envelope = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise EnvelopeError(
            400,
            "Body is not JSON",
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}.",
        ) from None
    except RecursionError:
        raise EnvelopeError(
            400,
            "Body is not JSON the relay can read",
            f"The request body nests arrays or objects deeper than {MAX_DEPTH} levels.",
        ) from None
    except ValueError as exc:
        reason = str(exc)
        if "digits" in reason:  # Python's limit on the length of an integer
            reason = "a number in it has thousands of digits"
        raise EnvelopeError(
            400,
            "Body is not JSON the relay can read",
            f"The request body is not JSON the relay can read: {reason}.",
        ) from None
    if not isinstance(envelope, dict):
        raise EnvelopeError(
            400,
            "Body is not a JSON object",
            f"The request body must be a JSON object, not {_json_kind(envelope)}.",
        )
    check_envelope(envelope)
    return Event.from_envelope(envelope, text)


def check_envelope(envelope: dict[str, Any]) -> None:
    """Raise EnvelopeError (422) naming the first envelope field that is wrong."""
    for field in ("event_id", "event_type"):
        value = envelope.get(field)
        if field not in envelope:
            raise _field_error(field, "is missing")
        if not isinstance(value, str) or not value.strip():
            raise _field_error(
                field, f"must be a non-empty string, got {_json_kind(value)}"
            )
        if not _is_plain_text(value):
            raise _field_error(
                field, "must be printable Unicode text, without control characters"
            )

    if "timestamp" not in envelope:
        raise _field_error("timestamp", "is missing")
    if not is_iso8601_with_offset(envelope["timestamp"]):
        raise _field_error(
            "timestamp",
            "must be an ISO 8601 date and time with an offset, "
            "like 2023-01-12T14:17:20+02:00",
        )

    if "event_data" not in envelope:
        raise _field_error("event_data", "is missing")
    if not isinstance(envelope["event_data"], dict):
        raise _field_error(
            "event_data",
            f"must be a JSON object, got {_json_kind(envelope['event_data'])}",
        )
    if _depth(envelope) > MAX_DEPTH:
        raise EnvelopeError(
            422,
            "Invalid event",
            f"The event nests objects or arrays deeper than {MAX_DEPTH} levels.",
        )


def _is_plain_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, written as \ud800 in JSON
        return False
    return not any(unicodedata.category(c) in _BREAKING for c in value)


def _depth(value: Any) -> int:
    """Return how deeply objects and arrays nest in ``value``, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in children)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def is_iso8601_with_offset(value: Any) -> bool:
    """Tell whether ``value`` is an ISO 8601 timestamp that carries an offset."""
    if not isinstance(value, str) or "T" not in value.upper():
        return False
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _field_error(field: str, problem: str) -> EnvelopeError:
    return EnvelopeError(
        422, "Invalid event", f"The field `{field}` of the event {problem}."
    )


def _json_kind(value: Any) -> str:
    kinds = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    if value is None:
        return "null"
    return kinds.get(type(value), type(value).__name__)
