"""The email plugin against a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import sample
from plugin_peers import (
    event_from,
    free_port,
    self_signed_cert,
    server_tls_context,
    start_smtp,
)

from ovoko_relay.errors import PermanentError, RetryableError
from ovoko_relay.plugins.mail import EmailPlugin

EVENT = event_from(sample("part-sold"))
PASSWORD = "s3cret-smtp-pass"


@pytest.fixture
def smtp():
    yield from start_smtp()


@pytest.fixture
def certificate(tmp_path):
    pytest.importorskip("cryptography")
    return self_signed_cert(tmp_path)


def settings_for(mailbox: Any, **overrides: Any) -> dict[str, Any]:
    settings = {
        "smtp_host": mailbox.host,
        "smtp_port": mailbox.port,
        "security": "none",
        "from": "Relay <relay@scrapyard.example>",
        "to": ["warehouse@scrapyard.example"],
        "subject": "Part 17 sold",
        "body": "Pick part 17 from shelf B.",
    }
    settings.update(overrides)
    return settings


def deliver(settings: dict[str, Any], timeout: float = 5.0) -> None:
    EmailPlugin(settings, timeout).deliver(settings, EVENT)


def test_text_and_html_arrive_as_alternatives(smtp):
    deliver(
        settings_for(
            smtp,
            to=["warehouse@scrapyard.example", "Boss <boss@scrapyard.example>"],
            html="<p>Pick part <b>17</b></p>",
        )
    )

    message = smtp.wait()[0]
    assert smtp.envelopes[0] == (
        "relay@scrapyard.example",
        ["warehouse@scrapyard.example", "boss@scrapyard.example"],
    )
    assert message["From"] == "Relay <relay@scrapyard.example>"
    assert message["To"] == "warehouse@scrapyard.example, Boss <boss@scrapyard.example>"
    assert message["Subject"] == "Part 17 sold"
    assert message["X-Ovoko-Event-Id"] == EVENT.event_id
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content().strip() == (
        "Pick part 17 from shelf B."
    )
    assert message.get_body(("html",)).get_content().strip() == (
        "<p>Pick part <b>17</b></p>"
    )


def test_text_only_and_comma_separated_recipients(smtp):
    deliver(settings_for(smtp, to=["a@scrapyard.example, b@scrapyard.example"]))

    message = smtp.wait()[0]
    assert message.get_content_type() == "text/plain"
    assert smtp.envelopes[0][1] == ["a@scrapyard.example", "b@scrapyard.example"]


def test_a_line_break_from_event_data_cannot_add_a_header(smtp):
    deliver(settings_for(smtp, subject="Part 17\nBcc: victim@example.org"))

    message = smtp.wait()[0]
    assert message["Subject"] == "Part 17 Bcc: victim@example.org"
    assert message["Bcc"] is None
    assert smtp.envelopes[0][1] == ["warehouse@scrapyard.example"]


def test_starttls_and_login_with_a_trusted_certificate(certificate, monkeypatch):
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    for mailbox in start_smtp(
        tls_context=server_tls_context(cert, key), login=("relay", PASSWORD)
    ):
        deliver(
            settings_for(
                mailbox, security="starttls", username="relay", password=PASSWORD
            )
        )
        assert mailbox.wait()[0]["Subject"] == "Part 17 sold"


def test_tls_from_the_first_byte(certificate, monkeypatch):
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = server_tls_context(cert, key)
    for mailbox in start_smtp(tls_context=context, implicit_tls=True):
        deliver(settings_for(mailbox, security="tls"))
        assert mailbox.wait()[0]["Subject"] == "Part 17 sold"


def test_starttls_with_an_untrusted_certificate_is_permanent(certificate):
    for mailbox in start_smtp(tls_context=server_tls_context(*certificate)):
        with pytest.raises(PermanentError, match="certificate that is not trusted"):
            deliver(settings_for(mailbox, security="starttls"))
        assert mailbox.messages == []


def test_tls_to_a_plain_text_server_is_permanent_and_names_the_port(smtp):
    with pytest.raises(PermanentError, match="does not speak TLS on that port"):
        deliver(settings_for(smtp, security="tls"))

    assert smtp.messages == []


def test_starttls_not_offered_is_permanent_and_sends_nothing(smtp):
    with pytest.raises(PermanentError, match="does not offer STARTTLS") as caught:
        deliver(settings_for(smtp, security="starttls"))

    assert f"the mail server 127.0.0.1:{smtp.port}" in str(caught.value)
    assert smtp.messages == []


def test_a_wrong_password_is_permanent_and_not_shown():
    for mailbox in start_smtp(login=("relay", PASSWORD)):
        with pytest.raises(
            PermanentError, match="refused the username or password"
        ) as caught:
            deliver(settings_for(mailbox, username="relay", password="wrong-pass-123"))
        assert "wrong-pass-123" not in str(caught.value)
        assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        ("550 5.1.1 No such user", PermanentError, "refused every recipient"),
        ("450 4.2.1 Mailbox busy", RetryableError, "refused the recipients for now"),
    ],
)
def test_refused_recipients_are_classified(reply, error, text):
    for mailbox in start_smtp(refuse={"nobody@scrapyard.example": reply}):
        with pytest.raises(error, match=text) as caught:
            deliver(settings_for(mailbox, to=["nobody@scrapyard.example"]))
        assert reply.split()[0] in str(caught.value)


def test_some_recipients_refused_is_permanent_and_says_who():
    refuse = {"nobody@scrapyard.example": "550 5.1.1 No such user"}
    for mailbox in start_smtp(refuse=refuse):
        with pytest.raises(PermanentError, match="refused some recipients") as caught:
            deliver(
                settings_for(
                    mailbox,
                    to=["warehouse@scrapyard.example", "nobody@scrapyard.example"],
                )
            )
        assert "nobody@scrapyard.example (550" in str(caught.value)
        assert mailbox.wait()[0]["To"] is not None


def test_nobody_listening_is_retryable():
    settings = settings_for(type("M", (), {"host": "127.0.0.1", "port": free_port()}))
    with pytest.raises(RetryableError, match="could not be reached"):
        deliver(settings)


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"to": ["not-an-address"]}, "`to` holds something that is not an e-mail"),
        ({"to": [" "]}, "`to` is empty"),
        ({"from": "relay"}, "`from` is not an e-mail address"),
        ({"username": "relay"}, "`username` is set but `password` is not"),
        ({"password": PASSWORD}, "`password` is set but `username` is not"),
    ],
)
def test_settings_that_can_never_work_are_permanent(smtp, overrides, text):
    with pytest.raises(PermanentError, match=text) as caught:
        deliver(settings_for(smtp, **overrides))
    assert PASSWORD not in str(caught.value)
    assert smtp.messages == []
