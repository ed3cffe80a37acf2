"""The webhook endpoint of the real relay: auth, body checks, storage, answers."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
import requests
from conftest import TOKEN, all_samples, sample

BASIC_CONFIG = """
    auth:
      header: X-Ovoko-Token
      tokens: ["${OVOKO_TOKEN}", "second-token-for-rotation"]
    server:
      max_body_bytes: 2048
    storage:
      path: ./data/relay.sqlite3
    actions:
      note:
        plugin: log
    rules:
      - name: Part sold
        when:
          status: sold
        do:
          - action: note
            message: "sold {{ data.part_id }}"
"""


def query(config_path: Path, sql: str) -> list[tuple]:
    db = config_path.parent / "data" / "relay.sqlite3"
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


def stored_ids(config_path: Path) -> list[str]:
    return [row[0] for row in query(config_path, "SELECT event_id FROM events")]


@pytest.fixture
def relay(write_config, start_relay):
    return start_relay(write_config(BASIC_CONFIG))


def test_every_sample_is_stored_and_answered_with_its_id(relay):
    samples = all_samples()

    for event in samples:
        answer = relay.post(event)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "accepted", "event_id": event["event_id"]}

    assert sorted(stored_ids(relay.config_path)) == sorted(
        e["event_id"] for e in samples
    )


def test_the_stored_row_keeps_type_timestamp_and_raw_body(relay):
    event = sample("part-sold-legacy-id-bridge")
    raw = json.dumps(event, indent=1)

    assert relay.post(raw, headers={"Content-Type": "application/json"}).ok

    [row] = query(
        relay.config_path,
        "SELECT event_type, event_time, received_at, body FROM events",
    )
    assert row[0] == "part.status.changed"
    assert row[1] == "2023-01-12T14:17:20+02:00"
    assert row[2] > 0
    assert row[3] == raw


def test_a_second_token_is_accepted_for_rotation(relay):
    answer = relay.post(sample("part-sold"), token="second-token-for-rotation")

    assert answer.status_code == 200


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_a_missing_or_wrong_token_is_refused_without_saying_why(relay, token):
    answer = relay.post(sample("part-sold"), token=token)

    assert answer.status_code == 401
    assert answer.json() == {
        "title": "Not authorized",
        "description": "The request does not carry a valid token header.",
    }
    assert stored_ids(relay.config_path) == []


def _event_with(**changes):
    event = sample("part-sold")
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return json.dumps(event).encode()


BAD_BODIES = [
    (b"\xff\xfe not utf-8", 400, "The request body is not valid UTF-8 (byte 0)."),
    (b"{not json", 400, "The request body is not valid JSON: Expecting property "
        "name enclosed in double quotes at line 1 column 2."),
    (b"[1, 2]", 400, "The request body must be a JSON object, not an array."),
    (b'"sold"', 400, "The request body must be a JSON object, not a string."),
    (b"", 400, "The request body is not valid JSON: Expecting value at line 1 "
        "column 1."),
    (_event_with(event_id=...), 422, "The field `event_id` of the event is missing."),
    (_event_with(event_id=""), 422, "The field `event_id` of the event must be a "
        "non-empty string, got a string."),
    (_event_with(event_id=15), 422, "The field `event_id` of the event must be a "
        "non-empty string, got a number."),
    (_event_with(event_type=...), 422, "The field `event_type` of the event is "
        "missing."),
    (_event_with(event_type=None), 422, "The field `event_type` of the event must "
        "be a non-empty string, got null."),
    (_event_with(timestamp=...), 422, "The field `timestamp` of the event is "
        "missing."),
    (_event_with(timestamp="2023-01-12T14:17:20"), 422, "The field `timestamp` of "
        "the event must be an ISO 8601 date and time with an offset, like "
        "2023-01-12T14:17:20+02:00."),
    (_event_with(timestamp="yesterday"), 422, "The field `timestamp` of the event "
        "must be an ISO 8601 date and time with an offset, like "
        "2023-01-12T14:17:20+02:00."),
    (_event_with(event_data=...), 422, "The field `event_data` of the event is "
        "missing."),
    (_event_with(event_data=["15"]), 422, "The field `event_data` of the event "
        "must be a JSON object, got an array."),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "description"), BAD_BODIES)
def test_a_bad_body_is_answered_with_what_is_wrong_and_nothing_stored(
    relay, body, status, description
):
    answer = relay.post(body, headers={"Content-Type": "application/json"})

    assert answer.status_code == status
    assert answer.json()["description"] == description
    assert stored_ids(relay.config_path) == []


def test_a_body_over_the_limit_is_refused_with_413(relay):
    event = sample("part-sold")
    event["event_data"]["note"] = "x" * 4000

    answer = relay.post(event)

    assert answer.status_code == 413
    assert answer.json()["description"] == (
        "The request body is larger than the 2048 bytes allowed."
    )
    assert stored_ids(relay.config_path) == []


def test_a_chunked_body_over_the_limit_is_refused_with_413(relay):
    chunks = iter([b'{"event_id": "', b"x" * 3000, b'"}'])

    answer = relay.post(chunks, headers={"Content-Type": "application/json"})

    assert answer.status_code == 413
    assert stored_ids(relay.config_path) == []


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", None],
)
def test_json_with_or_without_charset_or_no_content_type_is_accepted(
    relay, content_type
):
    headers = {"X-Ovoko-Token": TOKEN}
    if content_type:
        headers["Content-Type"] = content_type

    answer = requests.post(
        relay.url + "/webhooks/ovoko",
        data=json.dumps(sample("part-sold")).encode(),
        headers=headers,
        timeout=5,
    )

    assert answer.status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
def test_another_content_type_is_refused_with_415(relay, content_type):
    answer = relay.post(
        json.dumps(sample("part-sold")), headers={"Content-Type": content_type}
    )

    assert answer.status_code == 415
    assert answer.json()["description"] == (
        f"The body must be application/json, not {content_type}."
    )
    assert stored_ids(relay.config_path) == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_only_post_is_allowed(relay, method):
    answer = requests.request(method, relay.url + "/webhooks/ovoko", timeout=5)

    assert answer.status_code == 405
    assert "POST" in answer.headers["Allow"]
    assert stored_ids(relay.config_path) == []


def test_extra_envelope_fields_are_kept(relay):
    event = sample("part-sold")
    event["account_id"] = "42"

    assert relay.post(event).status_code == 200

    [(body,)] = query(relay.config_path, "SELECT body FROM events")
    assert json.loads(body)["account_id"] == "42"


def test_a_repeated_event_id_is_answered_2xx_as_duplicate_and_stored_once(relay):
    event = sample("part-sold")

    first = relay.post(event)
    second = relay.post(event)

    assert first.json()["status"] == "accepted"
    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "event_id": event["event_id"]}
    assert stored_ids(relay.config_path) == [event["event_id"]]
    relay.wait_for_log(rf"event_id={event['event_id']} .*outcome=duplicate")
    relay.wait_for_log(r"outcome=done", count=1)
    assert relay.log().count("message='sold 17'") == 1


def test_fifty_concurrent_distinct_events_are_all_stored_once(relay):
    events = []
    for number in range(50):
        event = sample("part-sold")
        event["event_id"] = f"00000000-0000-4000-8000-{number:012d}"
        events.append(event)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(relay.post, events))

    assert [a.status_code for a in answers] == [200] * 50
    assert sorted(stored_ids(relay.config_path)) == sorted(
        e["event_id"] for e in events
    )


def test_twenty_concurrent_posts_of_one_event_store_it_once(relay):
    event = sample("part-sold")
    barrier = threading.Barrier(20)

    def post(_):
        barrier.wait()
        return relay.post(event)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(post, range(20)))

    assert [a.status_code for a in answers] == [200] * 20
    outcomes = sorted(a.json()["status"] for a in answers)
    assert outcomes == ["accepted"] + ["duplicate"] * 19
    assert stored_ids(relay.config_path) == [event["event_id"]]


def test_the_answer_is_503_while_the_store_cannot_commit(relay):
    db = relay.config_path.parent / "data" / "relay.sqlite3"
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        answer = relay.post(sample("part-sold"))
        health = requests.get(relay.url + "/healthz", timeout=10)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert answer.status_code == 503
    assert answer.json()["title"] == "Event not stored"
    assert health.status_code == 503
    assert health.json()["store"] == "not writable"
    assert stored_ids(relay.config_path) == []
    relay.wait_for_log(r"level=error .*outcome=unavailable")

    retried = relay.post(sample("part-sold"))
    assert retried.status_code == 200
    assert stored_ids(relay.config_path) == [sample("part-sold")["event_id"]]


def test_healthz_is_200_while_the_store_is_writable(relay):
    answer = requests.get(relay.url + "/healthz", timeout=5)

    assert answer.status_code == 200
    assert answer.json()["store"] == "writable"
    assert answer.json()["workers"] == "alive"


def test_the_token_never_appears_in_the_log(relay):
    relay.post(sample("part-sold"))
    relay.post(sample("part-sold"), token="wrong-" + TOKEN)
    relay.post(b"{", headers={"Content-Type": "application/json"})
    relay.wait_for_log(r"outcome=done")
    relay.stop()

    log = relay.log()
    assert "outcome=accepted" in log
    assert "reason=unauthorized" in log
    assert TOKEN not in log
    assert "second-token-for-rotation" not in log


def test_each_request_outcome_is_one_log_line(relay):
    event = sample("part-sold")

    relay.post(event)
    relay.post(event)
    relay.post(event, token="nope")
    relay.post(b"[]", headers={"Content-Type": "application/json"})

    log = relay.wait_for_log(r"outcome=rejected", count=2)
    assert (
        f"event_id={event['event_id']} type=part.status.changed outcome=accepted" in log
    )
    assert (
        f"event_id={event['event_id']} type=part.status.changed outcome=duplicate"
        in log
    )
    assert "outcome=rejected reason=unauthorized" in log
    assert "outcome=rejected reason=invalid_body" in log


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ovoko_relay", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def test_serve_refuses_to_start_without_a_token(write_config, relay_env):
    path = write_config("auth: {header: X-Ovoko-Token}\n")

    result = run_cli("serve", "--config", str(path), "--port", "0", env=relay_env)

    assert result.returncode == 1
    assert f"{path}:1:1: no token configured" in result.stderr


def test_serve_refuses_to_start_when_the_token_variable_is_unset(
    write_config, relay_env
):
    path = write_config('auth:\n  tokens: ["${OVOKO_SECRET_NOT_SET}"]\n')

    result = run_cli("serve", "--config", str(path), "--port", "0", env=relay_env)

    assert result.returncode == 1
    assert (
        f"{path}:2:12: environment variable `OVOKO_SECRET_NOT_SET` is not set"
        in result.stderr
    )


def test_serve_with_a_missing_config_file_names_it(tmp_path, relay_env):
    missing = tmp_path / "nope.yaml"

    result = run_cli("serve", "--config", str(missing), env=relay_env)

    assert result.returncode == 1
    assert f"{missing}:1:1: file not found" in result.stderr


def test_serve_without_any_config_says_how_to_give_one(relay_env):
    result = run_cli("serve", env=relay_env)

    assert result.returncode == 1
    assert "no config file given; pass --config FILE or set OVOKO_RELAY_CONFIG" in (
        result.stderr
    )


def test_disabled_auth_accepts_without_a_token_and_warns(write_config, start_relay):
    relay = start_relay(write_config("auth: {disabled: true}\n"))

    assert relay.post(sample("part-sold"), token=None).status_code == 200
    assert "level=warning" in relay.log()
    assert "auth outcome=disabled" in relay.log()


def test_the_config_comes_from_the_environment_variable(write_config, start_relay):
    path = write_config(BASIC_CONFIG)
    relay = start_relay(path, env={"OVOKO_RELAY_CONFIG": str(path)}, config_flag=False)

    assert relay.post(sample("part-sold")).status_code == 200


def test_serve_on_a_port_in_use_says_so_in_one_line(write_config, relay_env):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        result = run_cli(
            "serve", "--config", str(write_config(BASIC_CONFIG)),
            "--host", "127.0.0.1", "--port", str(port), env=relay_env,
        )  # fmt: skip
    finally:
        busy.close()

    assert result.returncode == 1
    assert result.stderr.startswith(
        f"Error: cannot listen on 127.0.0.1 port {port}: Address already in use."
    )
    assert "Traceback" not in result.stderr
