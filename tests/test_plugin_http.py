"""The http plugin against a local HTTP server standing in for the seller's system."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from conftest import sample
from plugin_peers import event_from, free_port, start_receiver

from ovoko_relay.errors import PermanentError, RetryableError
from ovoko_relay.plugins.forward import HttpPlugin, signature

ENVELOPE = sample("part-sold")
EVENT = event_from(ENVELOPE)
SECRET = "hmac-secret-for-tests"


@pytest.fixture
def target():
    yield from start_receiver()


def deliver(settings: dict[str, Any], timeout: float = 5.0) -> None:
    HttpPlugin(settings, timeout).deliver(settings, EVENT)


def verify(secret: str, body: bytes, header: str) -> bool:
    """Check a signature the way a receiver's own code would."""
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", header)


def test_without_a_body_the_event_json_is_posted(target):
    deliver({"url": target.url + "/ovoko/in?source=relay"})

    request = target.wait()[0]
    assert request.method == "POST"
    assert request.path == "/ovoko/in?source=relay"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Ovoko-Event-Id"] == EVENT.event_id
    assert request.headers["User-Agent"].startswith("ovoko-relay/")
    assert request.json() == ENVELOPE
    assert list(request.json()) == list(ENVELOPE)


def test_a_body_template_method_and_headers(target):
    body = json.dumps({"part": "17", "state": "sold"})
    deliver(
        {
            "url": target.url + "/parts/17",
            "method": "PUT",
            "body": body,
            "headers": {"Authorization": "Bearer abc", "X-Shop": "Vilnius"},
        }
    )

    request = target.wait()[0]
    assert request.method == "PUT"
    assert request.body == body.encode()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer abc"
    assert request.headers["X-Shop"] == "Vilnius"


def test_a_yaml_mapping_body_is_sent_as_json(target):
    deliver({"url": target.url, "body": {"part": "17", "tags": ["a", "b"]}})
    request = target.wait()[0]
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {"part": "17", "tags": ["a", "b"]}


def test_timeout_and_settings_load_from_a_config(write_config):
    from ovoko_relay.config import load

    path = write_config(
        """\
        auth: {tokens: [test-token-0123456789]}
        actions:
          erp:
            plugin: http
            url: http://127.0.0.1:9/in
            timeout: 2s
            signing_secret: literal-signing-secret
        rules:
          - name: Sold
            do:
              - action: erp
                method: PUT
                body:
                  part: "{{ data.part_id }}"
        """
    )
    config = load(str(path), {})
    assert config.actions["erp"].timeout == 2.0
    assert "literal-signing-secret" in config.secrets


def test_a_plain_text_body_and_a_header_overriding_content_type(target):
    deliver({"url": target.url, "body": "part=17", "headers": {}})
    deliver(
        {
            "url": target.url,
            "body": "part=17",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        }
    )
    first, second = target.wait(2)
    assert first.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert second.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_get_without_a_body_sends_none(target):
    deliver({"url": target.url + "/ping?part=17", "method": "GET"})
    request = target.wait()[0]
    assert request.method == "GET"
    assert request.body == b""
    assert "Content-Type" not in request.headers


@pytest.mark.parametrize(
    ("settings", "header"),
    [
        ({}, "X-Ovoko-Relay-Signature"),
        ({"signature_header": "X-Signature"}, "X-Signature"),
        ({"body": "Part 17 ünd sold"}, "X-Ovoko-Relay-Signature"),
    ],
)
def test_the_signature_verifies_over_the_exact_body(target, settings, header):
    deliver({"url": target.url, "signing_secret": SECRET, **settings})

    request = target.wait()[0]
    assert request.headers[header].startswith("sha256=")
    assert verify(SECRET, request.body, request.headers[header])
    assert not verify("another-secret", request.body, request.headers[header])
    assert not verify(SECRET, request.body + b" ", request.headers[header])
    assert SECRET not in json.dumps(request.headers)


def test_signature_is_the_documented_hex_digest():
    assert signature("key", b"body") == (
        "sha256=" + hmac.new(b"key", b"body", hashlib.sha256).hexdigest()
    )


@pytest.mark.parametrize(
    ("status", "error", "retry_after"),
    [
        (500, RetryableError, None),
        (502, RetryableError, None),
        (503, RetryableError, 7.0),
        (429, RetryableError, 7.0),
        (400, PermanentError, None),
        (401, PermanentError, None),
        (404, PermanentError, None),
        (422, PermanentError, None),
        (301, PermanentError, None),
    ],
)
def test_answers_are_classified(target, status, error, retry_after):
    headers = {"Retry_After": "7"} if retry_after else {"Location": "/elsewhere"}
    target.answer(status, b"nope", **headers)

    with pytest.raises(error) as caught:
        deliver({"url": target.url + "/in?token=query-secret"})

    port = target.url.rsplit(":", 1)[1]
    assert str(caught.value).startswith(
        f"the forward target 127.0.0.1:{port} answered {status}: nope"
    )
    assert "query-secret" not in str(caught.value)
    assert getattr(caught.value, "retry_after", None) == retry_after


def test_a_slow_target_is_a_retryable_timeout(target):
    target.delay = 1.0
    with pytest.raises(RetryableError, match="did not answer within 0.2s"):
        deliver({"url": target.url}, timeout=0.2)


def test_nobody_listening_is_retryable():
    with pytest.raises(RetryableError, match="connection was refused"):
        deliver({"url": f"http://127.0.0.1:{free_port()}/"})


@pytest.mark.parametrize(
    ("settings", "text"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "must be a URL starting with https://"),
        ({"url": "http://127.0.0.1:99999/"}, "is not a valid URL"),
        ({"headers": {"X-Part": "17\r\nX-Evil: 1"}}, "would contain a line break"),
    ],
)
def test_settings_that_can_never_work_are_permanent(target, settings, text):
    with pytest.raises(PermanentError, match=text):
        deliver({"url": target.url, **settings})
    assert target.requests == []
