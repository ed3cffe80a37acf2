"""The envelope check and the token comparison, without a server."""

from __future__ import annotations

import json

import pytest
from conftest import all_samples

from ovoko_relay.app import token_matches
from ovoko_relay.events import EnvelopeError, is_iso8601_with_offset, parse_body


@pytest.mark.parametrize(
    "event", all_samples(), ids=lambda e: e["event_data"]["status"]
)
def test_every_sample_parses_with_its_fields(event):
    parsed = parse_body(json.dumps(event).encode())

    assert parsed.event_id == event["event_id"]
    assert parsed.event_type == "part.status.changed"
    assert parsed.data == event["event_data"]
    assert parsed.envelope == event


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2023-01-12T14:17:20+02:00", True),
        ("2023-01-12T14:17:20Z", True),
        ("2023-01-12T14:17:20.123456-05:30", True),
        ("2023-01-12T14:17:20", False),
        ("2023-01-12", False),
        ("2023-01-12 14:17:20+02:00", False),
        ("14:17:20+02:00", False),
        ("", False),
        (1673525840, False),
        (None, False),
    ],
)
def test_a_timestamp_needs_date_time_and_offset(value, valid):
    assert is_iso8601_with_offset(value) is valid


def test_an_envelope_error_carries_its_http_status():
    with pytest.raises(EnvelopeError) as caught:
        parse_body(b'{"event_id": "a", "event_type": "t", "timestamp": "x"}')

    assert caught.value.status == 422
    assert "`timestamp`" in caught.value.description


@pytest.mark.parametrize(
    ("presented", "accepted", "matches"),
    [
        ("secret-a", ("secret-a",), True),
        ("secret-b", ("secret-a", "secret-b"), True),
        ("secret-c", ("secret-a", "secret-b"), False),
        ("", ("secret-a",), False),
        (None, ("secret-a",), False),
        ("secret-a", (), False),
        ("sécret", ("sécret",), True),
    ],
)
def test_a_token_matches_only_an_accepted_one(presented, accepted, matches):
    assert token_matches(presented, accepted) is matches
