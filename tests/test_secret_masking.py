"""Secrets that leaked into pages and errors: found by trying to break the relay."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests
from conftest import sample
from plugin_peers import start_receiver

PASSWORD = "smtp-password-Zq81x"

RUNNING = """
    auth:
      tokens: ["${OVOKO_TOKEN}"]
    storage:
      path: ./data/relay.sqlite3
    actions:
      note: {plugin: log}
    rules: []
"""

# The office mixes up two variables: the password lands in a duration.
MIXED_UP = """
    auth:
      tokens: ["${OVOKO_TOKEN}"]
    storage:
      path: ./data/relay.sqlite3
    actions:
      note: {plugin: log}
      mail:
        plugin: email
        smtp_host: 127.0.0.1
        username: office
        password: "${SMTP_PASSWORD}"
        timeout: "${SMTP_PASSWORD}"
        from: relay@example.com
        to: warehouse@example.com
        subject: sold
        body: sold
    rules: []
"""


def test_a_rejected_reload_keeps_a_password_off_healthz_and_the_log(
    write_config, start_relay
):
    path = write_config(RUNNING)
    relay = start_relay(path, env={"SMTP_PASSWORD": PASSWORD})
    write_config(MIXED_UP)

    relay.signal(signal.SIGHUP)
    relay.wait_for_log("reload outcome=kept_running_config")
    health = requests.get(relay.url + "/healthz", timeout=5)

    assert health.json()["config"] == "stale"
    assert PASSWORD not in health.text
    assert PASSWORD not in relay.log()


@pytest.mark.parametrize(
    "setting", ['timeout: "${SMTP_PASSWORD}"', 'retry: {attempts: "${SMTP_PASSWORD}"}']
)
def test_check_never_prints_a_value_that_came_from_the_environment(
    write_config, relay_env, setting
):
    path = write_config(MIXED_UP.replace('timeout: "${SMTP_PASSWORD}"', setting))

    result = subprocess.run(
        [sys.executable, "-m", "ovoko_relay", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
        env={**relay_env, "SMTP_PASSWORD": PASSWORD},
    )

    assert result.returncode == 1
    assert PASSWORD not in result.stdout + result.stderr


FORWARD = """
    auth:
      tokens: ["${{OVOKO_TOKEN}}"]
    storage:
      path: ./data/relay.sqlite3
    actions:
      forward:
        plugin: http
        url: "{url}/hook"
        headers: {{Authorization: "Bearer ${{API_TOKEN}}"}}
    rules:
      - name: Part sold
        when: {{status: sold}}
        do:
          - action: forward
"""


@pytest.fixture
def receiver():
    yield from start_receiver()


@pytest.mark.parametrize(
    "api_token",
    ["ab{{7*7}}cd-9f2k", "ab{#cd-9f2k", "ab{%cd-9f2k"],
    ids=["braces", "comment-start", "block-start"],
)
def test_a_secret_from_the_environment_is_sent_as_written(
    write_config, start_relay, receiver, api_token
):
    path = write_config(FORWARD.format(url=receiver.url))
    relay = start_relay(path, env={"API_TOKEN": api_token})

    assert relay.post(sample("part-sold")).status_code == 200
    sent = receiver.wait(1)[0]

    assert sent.headers["Authorization"] == f"Bearer {api_token}"
