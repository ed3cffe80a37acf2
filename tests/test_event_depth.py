"""Deep nesting outside event_data: found by a second adversarial review."""

from __future__ import annotations

import pytest

from ovoko_relay.events import EnvelopeError, parse_body
from ovoko_relay.templates import compile_template, render_value

BODY = (
    '{"event_id": "e1", "event_type": "part.status.changed",'
    ' "timestamp": "2023-01-12T14:17:20+02:00",'
    ' "event_data": {"status": "sold", "part_id": "17"}, "meta": %s}'
)


@pytest.mark.parametrize("depth", [100, 950])
def test_a_deeply_nested_extra_field_is_refused_or_harmless(depth: int) -> None:
    body = (BODY % ("[" * depth + "]" * depth)).encode()
    try:
        event = parse_body(body)
    except EnvelopeError as exc:
        assert exc.status in (400, 422)
        return
    # Accepted with 2xx: then the office's plain message must still render.
    template = compile_template("Part {{ data.part_id }} sold", "message", [])
    context = {"event": event.envelope, "data": event.data, "rule": "Sold"}
    assert render_value(template, context) == "Part 17 sold"
