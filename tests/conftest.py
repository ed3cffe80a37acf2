"""Shared fixtures: the real relay in a subprocess, sample events, HTTP helpers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "examples" / "events"
TOKEN = "test-token-0123456789"
# The smallest useful config: the token from the environment, the database in
# ./data, and one rule logging every sold part.
LOG_CONFIG = """\
auth: {tokens: ["${OVOKO_TOKEN}"]}
storage: {path: ./data/relay.sqlite3}
actions:
  office-log: {plugin: log}
rules:
  - name: Sold
    when: {status: sold}
    do:
      - {action: office-log, message: "sold {{ data.part_id }}"}
"""
_LISTENING = re.compile(r"outcome=listening host=\S+ port=(\d+)")


def sample(name: str) -> dict[str, Any]:
    """Return one sample event from examples/events/ as a dict."""
    return json.loads((SAMPLES / f"{name}.json").read_text())


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def all_samples() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("*.json"))]


class RelayProcess:
    """A real `ovoko-relay serve` subprocess on an ephemeral loopback port."""

    def __init__(
        self, config_path: Path, env: dict[str, str], config_flag: bool = True
    ) -> None:
        self.config_path = config_path
        self.config_flag = config_flag
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log_path = config_path.parent / f"relay-{time.monotonic_ns()}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> RelayProcess:
        self._log = open(self.log_path, "w")  # noqa: SIM115 — closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ovoko_relay", "serve", "--host", "127.0.0.1",
             "--port", "0"]
            + (["--config", str(self.config_path)] if self.config_flag else []),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            text=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_text())
            if match:
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                self._log.close()
                raise AssertionError(f"relay exited at start:\n{self.log()}")
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait(10)
        self._log.close()
        raise AssertionError(f"relay did not start listening:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def post(
        self, event: Any, token: str | None = TOKEN, **kwargs: Any
    ) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers.setdefault("X-Ovoko-Token", token)
        if isinstance(event, (dict, list)):
            kwargs["data"] = json.dumps(event)
            headers.setdefault("Content-Type", "application/json")
        else:
            kwargs["data"] = event
        return requests.post(
            self.url + "/webhooks/ovoko", headers=headers, timeout=10, **kwargs
        )

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def wait_for_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if len(re.findall(pattern, text)) >= count:
                return text
            time.sleep(0.02)
        raise AssertionError(f"log never showed {pattern!r} x{count}:\n{self.log()}")


@pytest.fixture
def relay_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVOKO_")}
    env["OVOKO_TOKEN"] = TOKEN
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config file into tmp_path from YAML text; return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def start_relay(relay_env: dict[str, str]) -> Iterator[Any]:
    """Start real relays; every one still running is stopped after the test."""
    started: list[RelayProcess] = []

    def start(
        config_path: Path, env: dict[str, str] | None = None, config_flag: bool = True
    ) -> RelayProcess:
        merged = {**relay_env, **(env or {})}
        relay = RelayProcess(config_path, merged, config_flag).start()
        started.append(relay)
        return relay

    yield start
    for relay in started:
        if relay.proc and relay.proc.poll() is None:
            relay.proc.kill()
            relay.proc.wait(10)
        relay._log.close()
