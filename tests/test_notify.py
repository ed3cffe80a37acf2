"""sd_notify: the datagram itself, and what a real relay tells systemd."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import LOG_CONFIG

from ovoko_relay.notify import notify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(15)
    yield sock
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode("utf-8")
    return dict(line.split("=", 1) for line in data.splitlines())


def test_notify_sends_the_state_to_the_socket_path(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())

    assert notify("READY=1\nSTATUS=Listening") is True
    assert receive(notify_socket) == {"READY": "1", "STATUS": "Listening"}


def test_notify_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ovoko-relay-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)

        assert notify("STOPPING=1") is True
        assert sock.recv(100) == b"STOPPING=1"


@pytest.mark.parametrize(
    ("value", "sent"),
    [(None, False), ("", False), ("/nonexistent/dir/notify.sock", False)],
)
def test_notify_outside_systemd_sends_nothing(
    value: str | None, sent: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)

    assert notify("READY=1") is sent


@pytest.mark.e2e
def test_relay_tells_systemd_ready_reloading_and_stopping(
    write_config, start_relay, notify_socket: socket.socket
) -> None:
    relay = start_relay(
        write_config(LOG_CONFIG), env={"NOTIFY_SOCKET": notify_socket.getsockname()}
    )

    ready = receive(notify_socket)
    assert ready["READY"] == "1"
    # READY comes only once the port answers.
    assert requests.get(relay.url + "/healthz", timeout=5).status_code == 200

    relay.signal(signal.SIGHUP)
    reloading = receive(notify_socket)
    assert reloading["RELOADING"] == "1"
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert receive(notify_socket)["READY"] == "1"

    relay.signal(signal.SIGTERM)
    assert receive(notify_socket)["STOPPING"] == "1"
    assert relay.stop() == 0
