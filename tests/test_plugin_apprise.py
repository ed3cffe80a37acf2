"""The apprise plugin through Apprise's json:// service to a local HTTP server."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import sample
from plugin_peers import event_from, start_receiver

from ovoko_relay.errors import PermanentError, RetryableError
from ovoko_relay.plugins.notify_apprise import ApprisePlugin

EVENT = event_from(sample("part-sold"))


@pytest.fixture
def receiver():
    yield from start_receiver()


def json_url(receiver: Any, path: str = "/notify") -> str:
    return receiver.url.replace("http://", "json://") + path


def deliver(settings: dict[str, Any]) -> None:
    ApprisePlugin(settings, 5.0).deliver(settings, EVENT)


def test_title_and_body_reach_every_url(receiver):
    deliver(
        {
            "urls": [json_url(receiver, "/one"), json_url(receiver, "/two")],
            "title": "Part 17 sold",
            "body": "Pick it from shelf B.",
        }
    )

    requests = receiver.wait(2)
    assert sorted(r.path for r in requests) == ["/one", "/two"]
    for request in requests:
        assert request.json()["title"] == "Part 17 sold"
        assert request.json()["message"] == "Pick it from shelf B."


def test_a_refusing_service_is_retryable(receiver):
    receiver.answer(500)
    with pytest.raises(RetryableError, match="did not accept the notification"):
        deliver({"urls": [json_url(receiver)], "body": "b"})
    assert len(receiver.wait()) == 1


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("nosuchservice://user:topsecret@host", "URL number 1 .*`nosuchservice://`"),
        ("topsecret-not-a-url", "URL number 1 .*no recognisable scheme"),
    ],
)
def test_a_url_apprise_cannot_use_is_permanent_and_not_shown(receiver, url, text):
    with pytest.raises(PermanentError, match=text) as caught:
        deliver({"urls": [url], "body": "b"})
    assert "topsecret" not in str(caught.value)
    assert receiver.requests == []


def test_no_urls_is_permanent():
    with pytest.raises(PermanentError, match="`urls` is empty"):
        deliver({"urls": ["  "], "body": "b"})


def test_every_url_of_the_secret_list_is_masked(write_config):
    from ovoko_relay.config import load

    path = write_config(
        """\
        auth: {tokens: [test-token-0123456789]}
        actions:
          phones:
            plugin: apprise
            urls: [tgram://bot-token-1/chat, ntfy://user:pass-2@ntfy.example/topic]
        rules:
          - name: Sold
            do:
              - action: phones
                body: sold
                urls: [json://step-secret-3@127.0.0.1/]
        """
    )
    secrets = load(str(path), {}).secrets
    assert {
        "tgram://bot-token-1/chat",
        "ntfy://user:pass-2@ntfy.example/topic",
        "json://step-secret-3@127.0.0.1/",
    } <= secrets
