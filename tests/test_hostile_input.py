"""Bodies that broke the webhook endpoint: found by trying to break it."""

from __future__ import annotations

import pytest
from conftest import LOG_CONFIG, sample

CONFIG = LOG_CONFIG

ENVELOPE = (
    '{{"event_id": {event_id}, "event_type": "part.status.changed",'
    ' "timestamp": "2023-01-12T14:17:20+02:00",'
    ' "event_data": {{"status": "sold", "part_id": {part_id}}}}}'
)


@pytest.fixture
def relay(write_config, start_relay):
    return start_relay(write_config(CONFIG))


def test_an_event_id_with_a_lone_surrogate_does_not_stop_the_store(relay):
    body = ENVELOPE.format(event_id=r'"abc\ud800"', part_id='"1"')

    odd = relay.post(body.encode(), headers={"Content-Type": "application/json"})
    after = relay.post(sample("part-sold"))

    # Either answer for the odd one is fine, as long as the next event is kept.
    assert odd.status_code in (200, 400, 422), odd.text
    assert after.status_code == 200, after.text


@pytest.mark.parametrize(
    "body",
    [
        ENVELOPE.format(event_id='"big-number"', part_id="9" * 5000),
        "[" * 30000 + "]" * 30000,
    ],
    ids=["number-with-5000-digits", "nested-30000-deep"],
)
def test_a_body_python_cannot_parse_is_a_400_not_a_500(relay, body):
    answer = relay.post(body.encode(), headers={"Content-Type": "application/json"})

    assert answer.status_code == 400, answer.text


def test_an_event_id_cannot_forge_a_log_line(relay):
    forged = (
        "e-1\nts=2026-01-01T00:00:00.000Z level=error logger=ovoko_relay.dispatch"
        " event_id=FORGED rule=x outcome=dead"
    )
    event = sample("part-sold")
    event["event_id"] = forged

    answer = relay.post(event)
    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 200:
        relay.wait_for_log("outcome=dispatched")

    forged_lines = [
        line for line in relay.log().splitlines() if line.startswith("ts=2026-01-01")
    ]
    assert forged_lines == [], forged_lines
