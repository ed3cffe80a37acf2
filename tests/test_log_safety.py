"""Asynchronous log writer and log-line safety: found by a second adversarial review."""

from __future__ import annotations

import io
import json
import logging

import pytest

from ovoko_relay import logs
from ovoko_relay.events import EnvelopeError, parse_body


@pytest.fixture
def captured():
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure("INFO", stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot print me")


@pytest.mark.parametrize(
    ("message", "args"),
    [("count=%d", ("not a number",)), ("value=%s", (_Unprintable(),))],
)
def test_a_log_call_with_bad_arguments_does_not_raise_into_the_caller(
    captured, message, args
):
    # The standard handlers report such a record through handleError; a plugin's
    # sloppy log call must not turn a delivered message into a failed attempt.
    # The relay's handler is called directly: pytest's own capture handler,
    # which it adds beside every test, raises on such records by design.
    [handler] = [
        h for h in logging.getLogger().handlers if isinstance(h, logs._WriterHandler)
    ]
    bad = logging.LogRecord(
        "ovoko_relay.plugins.third_party",
        logging.INFO,
        __file__,
        1,
        message,
        args,
        None,
    )
    good = logging.LogRecord(
        "ovoko_relay.test", logging.INFO, __file__, 1, "after=yes", None, None
    )
    logging.raiseExceptions, saved = False, logging.raiseExceptions
    try:
        handler.handle(bad)
    finally:
        logging.raiseExceptions = saved
    handler.handle(good)
    handler.flush()
    assert "after=yes" in captured.getvalue()


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\u2028", "\u2029"])
def test_an_event_id_with_a_unicode_line_break_or_control_is_refused(char):
    body = json.dumps(
        {
            "event_id": f"ev{char}ts=x level=error",
            "event_type": "part.status.changed",
            "timestamp": "2023-01-12T14:17:20+02:00",
            "event_data": {},
        }
    ).encode()
    with pytest.raises(EnvelopeError) as caught:
        parse_body(body)
    assert caught.value.status == 422


@pytest.mark.parametrize("char", ["\x85", "\u2028"])
def test_a_quoted_log_value_never_holds_a_line_break_of_any_kind(char):
    assert len(f"event_id={logs.quoted('a' + char + 'b')}".splitlines()) == 1
