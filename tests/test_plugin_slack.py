"""The slack plugin against a local HTTP server standing in for Slack."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
from conftest import sample
from plugin_peers import event_from, free_port, start_receiver

from ovoko_relay.errors import PermanentError, RetryableError
from ovoko_relay.plugins.slack import SlackPlugin

EVENT = event_from(sample("part-sold"))


@pytest.fixture
def slack():
    yield from start_receiver()


def deliver(settings: dict, timeout: float = 5.0) -> None:
    SlackPlugin(settings, timeout).deliver(settings, EVENT)


def test_posts_the_message_as_json(slack):
    deliver({"webhook_url": slack.url + "/services/T0/B0/secret", "message": "Sold 17"})

    request = slack.wait()[0]
    assert request.method == "POST"
    assert request.path == "/services/T0/B0/secret"
    assert request.headers["Content-Type"].startswith("application/json")
    assert request.json() == {"text": "Sold 17"}


def test_blocks_from_yaml_keep_booleans_and_text(slack):
    blocks = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": "Sold", "emoji": "true"},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": "Part *17*"}},
    ]
    deliver({"webhook_url": slack.url, "message": "Sold 17", "blocks": blocks})

    body = slack.wait()[0].json()
    assert body["text"] == "Sold 17"
    assert body["blocks"][0]["text"]["emoji"] is True
    assert body["blocks"][1]["text"]["text"] == "Part *17*"


def test_blocks_may_be_json_text(slack):
    deliver(
        {
            "webhook_url": slack.url,
            "message": "Sold",
            "blocks": '[{"type": "divider"}]',
        }
    )
    assert slack.wait()[0].json()["blocks"] == [{"type": "divider"}]


def test_broken_json_blocks_are_permanent(slack):
    with pytest.raises(PermanentError, match="not valid JSON"):
        deliver({"webhook_url": slack.url, "message": "m", "blocks": "[{oops"})
    assert slack.requests == []


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (429, {"Retry_After": "30"}, RetryableError, 30.0),
        (500, {}, RetryableError, None),
        (503, {}, RetryableError, None),
        (400, {}, PermanentError, None),
        (403, {}, PermanentError, None),
        (404, {}, PermanentError, None),
        (410, {}, PermanentError, None),
    ],
)
def test_answers_are_classified(slack, status, headers, error, retry_after):
    slack.answer(status, b"no_service", **headers)
    url = slack.url + "/services/T0/B0/very-secret-token"

    with pytest.raises(error) as caught:
        deliver({"webhook_url": url, "message": "m"})

    text = str(caught.value)
    assert f"the Slack webhook answered {status}: no_service" == text
    assert "very-secret-token" not in text and "127.0.0.1" not in text
    assert getattr(caught.value, "retry_after", None) == retry_after


def test_retry_after_as_an_http_date(slack):
    slack.answer(429, Retry_After=formatdate(time.time() + 120, usegmt=True))
    with pytest.raises(RetryableError) as caught:
        deliver({"webhook_url": slack.url, "message": "m"})
    assert 100 < caught.value.retry_after <= 121


def test_a_slow_webhook_is_a_retryable_timeout(slack):
    slack.delay = 1.0
    with pytest.raises(RetryableError, match="did not answer within 0.2s"):
        deliver({"webhook_url": slack.url, "message": "m"}, timeout=0.2)


def test_nobody_listening_is_retryable():
    url = f"http://127.0.0.1:{free_port()}/services/secret-path"
    with pytest.raises(RetryableError, match="could not be reached") as caught:
        deliver({"webhook_url": url, "message": "m"})
    assert "secret-path" not in str(caught.value)


def test_a_url_that_is_not_http_is_permanent():
    with pytest.raises(PermanentError, match="must be a URL starting with https://"):
        deliver({"webhook_url": "hooks.slack.com/services/x", "message": "m"})
