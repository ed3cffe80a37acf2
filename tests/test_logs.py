"""Logs: logfmt or JSON lines on stderr, levels obeyed, no secret ever shown."""

from __future__ import annotations

import io
import json
import logging
import signal
import socket
from collections.abc import Iterator

import pytest
import requests
from conftest import TOKEN, sample

from ovoko_relay import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Route the root logger to a buffer the way `serve` routes it to stderr."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    yield stream
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:], root.level = saved
    logs.set_secrets(())


def written(stream: io.StringIO) -> str:
    """Return what the log wrote, once every queued line is out."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    return stream.getvalue()


def configure(stream: io.StringIO, fmt: str, level: str = "INFO") -> None:
    logs.configure(level, fmt, stream)


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("token=abcd1234 ok", ["abcd1234"], "token=*** ok"),
        ("short=abc", ["abc"], "short=abc"),  # too short to mask safely
        ("a=" + repr("pa'ss\\word"), ["pa'ss\\word"], 'a="***"'),
        ('{"p": "pa\\"ss"}', ['pa"ss'], '{"p": "***"}'),
        (
            "url=smtps://me:hunter22@mail.example:465",
            [],
            "url=smtps://me:***@mail.example:465",
        ),
        (
            "to https://hooks.slack.com/services/T0/B0/XYZ failed",
            [],
            "to https://hooks.slack.com/services/*** failed",
        ),
        ("longest secret first", ["secret first", "secret"], "longest ***"),
    ],
)
def test_mask(text: str, secrets: list[str], expected: str) -> None:
    logs.set_secrets(secrets)
    try:
        assert logs.mask_secrets(text) == expected
    finally:
        logs.set_secrets(())


def test_fields_splits_a_logfmt_message() -> None:
    message = "event_id=e1 rule='Part sold' outcome=retry error=\"it's down\""

    assert logs.fields(message) == {
        "event_id": "e1",
        "rule": "Part sold",
        "outcome": "retry",
        "error": "it's down",
    }


def test_logfmt_line_shape(captured: io.StringIO) -> None:
    configure(captured, "logfmt")

    logging.getLogger("ovoko_relay.test").info("event_id=%s outcome=%s", "e1", "done")

    line = written(captured)
    assert line.endswith(
        " level=info logger=ovoko_relay.test event_id=e1 outcome=done\n"
    )
    assert line.startswith("ts=20")


def test_json_line_has_the_message_fields(captured: io.StringIO) -> None:
    configure(captured, "json")
    logs.set_secrets(["s3cr3t-value"])

    try:
        raise ValueError("boom s3cr3t-value")
    except ValueError:
        logging.getLogger("ovoko_relay.test").exception(
            "event_id=%s rule=%r outcome=dead error=%r",
            "e1",
            "Part sold",
            "s3cr3t-value",
        )

    record = json.loads(written(captured))
    assert record["level"] == "error"
    assert record["event_id"] == "e1"
    assert record["rule"] == "Part sold"
    assert record["error"] == "***"
    assert "s3cr3t-value" not in written(captured)
    assert "ValueError: boom ***" in record["exc"]


@pytest.mark.parametrize(
    ("level", "shown", "hidden"),
    [("INFO", ["info", "warning"], ["debug"]), ("WARNING", ["warning"], ["info"])],
)
def test_level_filters(
    captured: io.StringIO, level: str, shown: list[str], hidden: list[str]
) -> None:
    configure(captured, "logfmt", level)
    log = logging.getLogger("ovoko_relay.test")

    log.debug("outcome=debug")
    log.info("outcome=info")
    log.warning("outcome=warning")

    text = written(captured)
    assert all(f"level={name}" in text for name in shown)
    assert not any(f"level={name}" in text for name in hidden)


SMTP_PASSWORD = "smtp-pass-Zq8!x"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SECRET_CONFIG = """\
server: {{port: {port}}}
auth: {{tokens: ["${{OVOKO_TOKEN}}"]}}
storage: {{path: ./data/relay.sqlite3}}
logging: {{format: {fmt}}}
delivery: {{retry: {{attempts: 1}}}}
actions:
  office-log: {{plugin: log}}
  chat: {{plugin: slack, webhook_url: "${{SLACK_WEBHOOK_URL}}"}}
  forward: {{plugin: http, url: "${{SLACK_WEBHOOK_URL}}"}}
  mail:
    plugin: email
    smtp_host: 127.0.0.1
    smtp_port: {smtp_port}
    security: none
    username: relay
    password: "${{SMTP_PASSWORD}}"
    from: relay@example.invalid
    to: office@example.invalid
rules:
  - name: Leaky
    when: {{event_type: part.status.changed}}
    do:
      - action: office-log
        message: "pw ${{SMTP_PASSWORD}} tok ${{OVOKO_TOKEN}}"
      - action: office-log
        message: "hook ${{SLACK_WEBHOOK_URL}}"
      - {{action: chat, message: "sold {{{{ data.part_id }}}}"}}
      - action: forward
      - action: mail
        subject: "pw ${{SMTP_PASSWORD}}"
        body: "sold"
"""


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_secrets_from_the_environment_never_reach_the_log(
    write_config, start_relay, fmt: str
) -> None:
    hook = f"http://127.0.0.1:{closed_port()}/services/T0AB/B0CD/hookSecretXYZ123"
    secrets = [TOKEN, SMTP_PASSWORD, hook, "hookSecretXYZ123"]
    path = write_config(
        SECRET_CONFIG.format(port=8080, fmt=fmt, smtp_port=closed_port())
    )
    relay = start_relay(
        path, env={"SMTP_PASSWORD": SMTP_PASSWORD, "SLACK_WEBHOOK_URL": hook}
    )

    assert relay.post(sample("part-sold")).status_code == 200
    relay.wait_for_log(r"attempt=1 outcome=", count=5, timeout=20)
    # A config whose error message quotes the token itself.
    path.write_text(path.read_text().replace("port: 8080", 'port: "${OVOKO_TOKEN}"'))
    relay.signal(signal.SIGHUP)
    relay.wait_for_log("kept_running_config")
    health = requests.get(relay.url + "/healthz", timeout=5).text
    assert relay.stop() == 0

    text = relay.log()
    for secret in secrets:
        assert secret not in text
        assert secret not in health
    # The whole message came from the environment, so all of it is masked.
    assert "message='***'" in text or '"message": "***"' in text
    assert "not `***`" in text
    assert '"config_problems": 1' in health  # counted there, told in the log
    lines = text.splitlines()
    event_id = sample("part-sold")["event_id"]
    assert (
        len([x for x in lines if f"event_id={event_id} type=" in x and "accepted" in x])
        == 1
    )
    assert len([x for x in lines if f"event_id={event_id} rule=" in x]) == 5
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        assert any(r.get("outcome") == "accepted" for r in records)
    else:
        assert all(line.startswith("ts=") for line in lines)
